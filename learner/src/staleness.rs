//! The declared staleness rule for asynchronous actors.
//!
//! A trajectory carries the policy version that sampled it. When the learner is about to
//! update version `v`, a trajectory of version `u` has lag `v − u`:
//!
//! 1. lag > `max_policy_lag`: dropped, counted as `stale`;
//! 2. otherwise admitted, and the loss weights each step by the truncated importance weight
//!    min(c̄, π_θ/μ) (see [`crate::loss`]), which corrects the remaining off-policyness;
//! 3. `u > v` (a version the learner never published, e.g. after it restarted from an older
//!    checkpoint) is rejected at the push as `future_version`.
//!
//! Nothing is mixed silently: every drop is counted in
//! `musicrl_learner_trajectories_dropped_total{reason}`.

use musicrl_common::PolicyVersion;

/// What to do with one trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit { lag: u64 },
    Stale { lag: u64 },
    Future,
}

/// The rule, with its one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalenessRule {
    pub max_policy_lag: u64,
}

impl StalenessRule {
    pub fn admit(&self, sampled_by: PolicyVersion, updating: PolicyVersion) -> Admission {
        if sampled_by > updating {
            return Admission::Future;
        }
        let lag = sampled_by.lag_behind(updating);
        if lag > self.max_policy_lag {
            Admission::Stale { lag }
        } else {
            Admission::Admit { lag }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_bound_is_inclusive() {
        let rule = StalenessRule { max_policy_lag: 2 };
        let v = PolicyVersion;
        assert_eq!(rule.admit(v(10), v(10)), Admission::Admit { lag: 0 });
        assert_eq!(rule.admit(v(8), v(10)), Admission::Admit { lag: 2 });
        assert_eq!(rule.admit(v(7), v(10)), Admission::Stale { lag: 3 });
        assert_eq!(rule.admit(v(11), v(10)), Admission::Future);
    }
}
