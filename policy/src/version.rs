//! The version of a policy's parameters: the learner's update count.

use serde::{Deserialize, Serialize};

/// A version of the policy's parameters. Version 0 is θ0, the reference; the learner
/// publishes version n after its n-th update.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct PolicyVersion(pub u64);

impl PolicyVersion {
    /// How many versions `self` is behind `newer` (0 if it is not behind).
    pub fn lag_behind(self, newer: PolicyVersion) -> u64 {
        newer.0.saturating_sub(self.0)
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}
