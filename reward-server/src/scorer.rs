//! The scorer trait and the built-in test scorer.

use musicrl_common::config::ComponentConfig;
use musicrl_common::wire::ScoreInput;

use crate::error::{Result, RewardError};

/// A sequence-level reward component. Implementations must be deterministic for a given
/// version, return one finite score per input, and do heavy work off the async executor.
#[tonic::async_trait]
pub trait Scorer: Send + Sync + 'static {
    /// The component's name on the wire and in metrics.
    fn name(&self) -> &str;
    /// Identifies the scorer's weights or rules; changes whenever its scores could change.
    fn version(&self) -> String;
    /// One score per input, in order.
    async fn score(&self, batch: &[ScoreInput]) -> Result<Vec<f32>>;
}

/// **A test scorer, not a music reward**: the fraction of a sequence's tokens whose id is
/// below `target_below`. It gives the RL system an honest, cheap, caption-independent
/// objective that a policy can visibly climb, so the distributed loop is tested end to end
/// before (and independently of) the music reward models.
#[derive(Debug, Clone)]
pub struct TokenFraction {
    name: String,
    target_below: u32,
}

impl TokenFraction {
    pub fn new(name: impl Into<String>, target_below: u32) -> Self {
        Self {
            name: name.into(),
            target_below,
        }
    }

    /// The score of one sequence, in [0, 1].
    pub fn score_one(&self, tokens: &[u32]) -> f32 {
        if tokens.is_empty() {
            return 0.0;
        }
        tokens.iter().filter(|&&t| t < self.target_below).count() as f32 / tokens.len() as f32
    }
}

#[tonic::async_trait]
impl Scorer for TokenFraction {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        format!("token-fraction-1(target_below={})", self.target_below)
    }

    async fn score(&self, batch: &[ScoreInput]) -> Result<Vec<f32>> {
        Ok(batch.iter().map(|s| self.score_one(&s.tokens)).collect())
    }
}

/// Builds the scorer a component names.
pub fn build(component: &ComponentConfig) -> Result<Box<dyn Scorer>> {
    match component.kind.as_str() {
        "token-fraction" => Ok(Box::new(TokenFraction::new(
            component.display_name(),
            component.target_below,
        ))),
        other => Err(RewardError::UnknownScorer(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_fraction_counts_hits() {
        let s = TokenFraction::new("t", 4);
        assert_eq!(s.score_one(&[0, 1, 5, 9]), 0.5);
        assert_eq!(s.score_one(&[3, 3]), 1.0);
        assert_eq!(s.score_one(&[4]), 0.0);
    }
}
