//! DPO with every otpref token-weighting method, on the built-in task or on a Hugging Face
//! model with JSON-lines preference data. `--help` lists every setting; `docs/trainers.md`
//! says what the program does with them.

fn main() -> std::process::ExitCode {
    otpref_trainers::run::cli::main::<otpref_trainers::run::DpoConfig>(
        "dpo_trainer",
        "DPO trainer (OTPO, DPO, SimPO, SamPO, LD-DPO and OTPO's ablations) on burn",
    )
}
