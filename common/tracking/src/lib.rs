//! Experiment trackers a run writes to: TensorBoard event files (`tensorboard`, read by stock
//! TensorBoard) and an MLflow tracking server (`mlflow`, over its REST API). No gRPC, no
//! tensors: a run's scalars, clips and files in the formats those tools read.

pub mod mlflow;
pub mod tensorboard;
