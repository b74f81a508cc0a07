//! The built-in task: its worked solutions are right, its rejected responses wrong, and its
//! confounds present at the rates asked for.

use otpref_trainers::data::Text;
use otpref_trainers::task::{answer_of, pairs, problems, SplitMix64, TaskConfig, ALPHABET};

fn plain(text: &Text) -> &str {
    match text {
        Text::Plain(s) => s,
        Text::Conversation(_) => panic!("the built-in task is plain text"),
    }
}

#[test]
fn solutions_are_correct_column_by_column() {
    for problem in problems(2000, 1) {
        let solution = problem.solution();
        assert!(problem.is_solved_by(&solution), "{solution}");
        // Every step `x+y(+c)=s` is true arithmetic.
        let work = solution.rsplit_once(':').unwrap().0;
        for step in work.split(',') {
            let (terms, sum) = step.split_once('=').unwrap();
            let total: u32 = terms.split('+').map(|t| t.parse::<u32>().unwrap()).sum();
            assert_eq!(total, sum.parse::<u32>().unwrap(), "{solution}");
        }
        assert_eq!(answer_of(&solution), Some(problem.a + problem.b));
    }
}

#[test]
fn rejected_answers_are_wrong_and_near_misses_are_near() {
    let config = TaskConfig::default();
    let problems = problems(2000, 7);
    let pairs = pairs(2000, 7, &config);
    let (mut near, mut filler, mut chosen_len, mut rejected_len) = (0, 0, 0, 0);
    for (problem, pair) in problems.iter().zip(&pairs) {
        let (chosen, rejected) = (plain(&pair.chosen), plain(&pair.rejected));
        assert!(problem.is_solved_by(chosen), "{chosen}");
        assert!(!problem.is_solved_by(rejected), "{rejected}");
        assert!(chosen
            .chars()
            .chain(rejected.chars())
            .all(|c| ALPHABET.contains(c)));
        let truth = (problem.a + problem.b) as i64;
        let off = (answer_of(rejected).unwrap() as i64 - truth).abs();
        if pair.margin == Some(0.0) {
            near += 1;
            assert!(off == 10 || off == 100, "near miss {rejected} for {truth}");
        }
        filler += usize::from(chosen.starts_with("so "));
        chosen_len += chosen.len();
        rejected_len += rejected.len();
    }
    let share = |n: usize| n as f64 / pairs.len() as f64;
    assert!((share(near) - config.near_miss_rate).abs() < 0.05);
    assert!((share(filler) - config.filler_rate).abs() < 0.05);
    // The length confound: chosen responses are longer on average.
    assert!(chosen_len > rejected_len + 2 * pairs.len());
}

#[test]
fn the_generator_replays_from_its_state() {
    let mut a = SplitMix64::new(3);
    a.next_u64();
    let mut b = SplitMix64::new(a.state);
    assert_eq!(a.next_u64(), b.next_u64());
    let mut items: Vec<u32> = (0..50).collect();
    SplitMix64::new(9).shuffle(&mut items);
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(items, sorted);
}
