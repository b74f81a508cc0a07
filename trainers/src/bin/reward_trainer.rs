//! A reward model trained with Bradley-Terry, a fixed or per-pair margin, or APLOT's adaptive
//! margins, on the built-in task or on a Hugging Face model with JSON-lines preference data.
//! `--help` lists every setting; `docs/trainers.md` says what the program does with them.

fn main() -> std::process::ExitCode {
    otpref_trainers::run::cli::main::<otpref_trainers::run::RewardConfig>(
        "reward_trainer",
        "Reward-model trainer (Bradley-Terry, hard and point margins, APLOT) on burn",
    )
}
