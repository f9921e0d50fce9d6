//! Orchestration: the commands that run roles and other commands together — `local` (a
//! learner, actors and a reward server as supervised processes), the paper's `experiment`,
//! the on-policy `feedback loop`, reward training, judging, the benches — each driven by a
//! typed plan ([`plan`]). The `musicrl` binary parses plans from the command line and calls
//! in here; nothing here parses a command line of its own.

pub mod agreement;
pub mod bench;
pub mod experiment;
pub mod feedback;
pub mod feedback_loop;
pub mod judging;
pub mod local;
pub mod music;
pub mod musicgen;
pub mod plan;
pub mod process;
pub mod progress;
pub mod reward_training;
pub mod sheet;
pub mod verdict;
