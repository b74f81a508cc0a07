//! The built-in task: three-digit addition with the working shown, generated in code (no
//! download), with a checkable answer and the confounds that preference methods claim to
//! handle.
//!
//! A prompt is `"347+258="`; a correct response works column by column and ends with the
//! answer after a colon: `"7+8=15,4+5+1=10,3+2+1=6:605"` (tens of characters, so weighting
//! tokens matters). Preference pairs are built so that the papers' claims can show up or fail:
//!
//! - **length confound** (OTPO): a share of the chosen responses start with irrelevant filler
//!   (`"so so "`), so chosen responses are longer on average and a method that rewards length
//!   learns verbosity instead of arithmetic;
//! - **difficulty** (APLOT): a rejected response is either a near miss (one carry dropped: one
//!   column and the answer wrong) or an obvious error (every column and the answer random).
//!
//! Success is scored from a generation: the number after its last colon must be the sum.

use crate::data::{PreferencePair, Text};
use crate::tokenizer::CharVocabulary;

/// Every character the task writes.
pub const ALPHABET: &str = "0123456789+=,: so";

/// The filler a chosen response may start with.
const FILLER: &str = "so ";

/// How the built-in pairs are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskConfig {
    /// Share of chosen responses that start with filler.
    pub filler_rate: f64,
    /// Share of rejected responses that are near misses (the rest are obvious errors).
    pub near_miss_rate: f64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            filler_rate: 0.5,
            near_miss_rate: 0.5,
        }
    }
}

/// The task's character vocabulary.
pub fn vocabulary() -> CharVocabulary {
    CharVocabulary::new(ALPHABET)
}

/// A prompt and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The first addend (100..1000).
    pub a: u32,
    /// The second addend (100..1000).
    pub b: u32,
}

impl Problem {
    /// The problem a prompt `"a+b="` poses, if it is one.
    pub fn from_prompt(prompt: &str) -> Option<Problem> {
        let (a, b) = prompt.strip_suffix('=')?.split_once('+')?;
        Some(Problem {
            a: a.parse().ok()?,
            b: b.parse().ok()?,
        })
    }

    /// `"a+b="`.
    pub fn prompt(&self) -> String {
        format!("{}+{}=", self.a, self.b)
    }

    /// The correct worked response.
    pub fn solution(&self) -> String {
        worked(self.a, self.b, None)
    }

    /// Whether `generation` ends with the right answer (the number after its last colon).
    pub fn is_solved_by(&self, generation: &str) -> bool {
        answer_of(generation) == Some(self.a + self.b)
    }
}

/// The number after the last colon of `text`, if it is one.
pub fn answer_of(text: &str) -> Option<u32> {
    text.rsplit_once(':')?.1.trim().parse().ok()
}

/// `count` problems drawn with `seed`.
pub fn problems(count: usize, seed: u64) -> Vec<Problem> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| Problem {
            a: 100 + rng.below(900) as u32,
            b: 100 + rng.below(900) as u32,
        })
        .collect()
}

/// `count` preference pairs drawn with `seed`.
pub fn pairs(count: usize, seed: u64, config: &TaskConfig) -> Vec<PreferencePair> {
    let mut rng = SplitMix64::new(seed ^ 0x005e_ed0f_7a5c);
    problems(count, seed)
        .into_iter()
        .map(|problem| {
            let mut chosen = problem.solution();
            if rng.unit() < config.filler_rate {
                let repeats = 1 + rng.below(3) as usize;
                chosen = FILLER.repeat(repeats) + &chosen;
            }
            let near_miss = rng.unit() < config.near_miss_rate;
            let rejected = if near_miss {
                worked(problem.a, problem.b, Some(rng.below(2)))
            } else {
                obvious_error(&problem, &mut rng)
            };
            PreferencePair {
                prompt: Text::Plain(problem.prompt()),
                chosen: Text::Plain(chosen),
                rejected: Text::Plain(rejected),
                // TRL's margin column: how clearly chosen is better (1 for an obvious error,
                // 0 for a near miss).
                margin: Some(if near_miss { 0.0 } else { 1.0 }),
                chosen_weights: None,
                rejected_weights: None,
            }
        })
        .collect()
}

/// The worked sum column by column, from the units. A near miss (`near_miss = Some(pick)`)
/// forgets one carry (the `pick`-th of those there are), so the next column and the answer are
/// wrong; a sum without carries gets its hundreds column one too small instead.
fn worked(a: u32, b: u32, near_miss: Option<u64>) -> String {
    let digits = |n: u32| [n % 10, n / 10 % 10, n / 100];
    let (da, db) = (digits(a), digits(b));
    let carries_out: Vec<usize> = {
        let mut carry = 0;
        (0..3)
            .filter(|&column| {
                let sum = da[column] + db[column] + carry;
                carry = sum / 10;
                carry > 0 && column < 2
            })
            .collect()
    };
    let forgotten = near_miss
        .filter(|_| !carries_out.is_empty())
        .map(|pick| carries_out[pick as usize % carries_out.len()]);
    let mut steps = Vec::new();
    let (mut carry, mut answer) = (0, 0);
    for column in 0..3 {
        let mut sum = da[column] + db[column] + carry;
        if near_miss.is_some() && forgotten.is_none() && column == 2 {
            sum -= 1; // both hundreds digits are at least 1
        }
        steps.push(match carry {
            0 => format!("{}+{}={sum}", da[column], db[column]),
            _ => format!("{}+{}+{carry}={sum}", da[column], db[column]),
        });
        answer += (sum % 10) * 10u32.pow(column as u32);
        carry = if forgotten == Some(column) {
            0
        } else {
            sum / 10
        };
    }
    answer += carry * 1000;
    format!("{}:{answer}", steps.join(","))
}

fn obvious_error(problem: &Problem, rng: &mut SplitMix64) -> String {
    let steps: Vec<String> = (0..3)
        .map(|_| {
            let (x, y) = (rng.below(10), rng.below(10));
            format!("{x}+{y}={}", rng.below(19))
        })
        .collect();
    let mut answer = 100 + rng.below(1900) as u32;
    if answer == problem.a + problem.b {
        answer += 1;
    }
    format!("{}:{answer}", steps.join(","))
}

/// A small, fast generator whose whole state is one integer, so data order and label noise
/// can be replayed exactly from a checkpoint (SplitMix64, Steele et al. 2014).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    /// The state; save it to resume the stream.
    pub state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn splitmix64_gives_the_reference_stream() {
        // The first outputs of Vigna's splitmix64.c (and Java's SplittableRandom) from seed
        // 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let expected: [u64; 5] = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
    }
}
