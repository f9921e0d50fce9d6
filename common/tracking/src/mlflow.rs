//! An MLflow tracking-server client over its REST API (`/api/2.0/mlflow/…`): one run with the
//! configuration as parameters, per-step metrics, a final status and artifacts. Blocking
//! (`ureq`), for the learner's training thread; every call has a timeout, and the caller
//! decides what a failure means (the learner warns and trains on: a tracker that is down must
//! not stop a run).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// MLflow's limits: 100 parameters and 1,000 metrics a `log-batch` call, parameter values of at
/// most 6,000 characters (longer ones are cut, marked with an ellipsis).
const PARAMS_PER_BATCH: usize = 100;
const METRICS_PER_BATCH: usize = 1000;
const MAX_PARAM_CHARS: usize = 6000;

/// One MLflow run.
pub struct MlflowRun {
    agent: ureq::Agent,
    base: String,
    run_id: String,
    experiment_id: String,
    /// Where the server keeps the run's artifacts (`mlflow-artifacts:/…` when it serves them).
    artifact_uri: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into()
}

impl MlflowRun {
    /// Starts a run named `run_name` in `experiment` (created when the server has none of that
    /// name) on the tracking server at `url`, and logs `params`.
    pub fn start(
        url: &str,
        experiment: &str,
        run_name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "tracking.mlflow must be an http:// or https:// URL, not {url:?}"
            ));
        }
        let agent = agent();
        let found = get(
            &agent,
            &format!("{base}/api/2.0/mlflow/experiments/get-by-name"),
            &[("experiment_name", experiment)],
        )?;
        let experiment_id = match found {
            (200, v) => v["experiment"]["experiment_id"].as_str().map(String::from),
            (404, _) => None,
            (code, v) => return Err(format!("MLflow answered {code} to get-by-name: {v}")),
        };
        let experiment_id = match experiment_id {
            Some(id) => id,
            None => {
                let v = post(
                    &agent,
                    &format!("{base}/api/2.0/mlflow/experiments/create"),
                    &json!({ "name": experiment }),
                )?;
                v["experiment_id"]
                    .as_str()
                    .ok_or_else(|| format!("MLflow created no experiment: {v}"))?
                    .to_string()
            }
        };
        let v = post(
            &agent,
            &format!("{base}/api/2.0/mlflow/runs/create"),
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": now_ms(),
                "tags": [
                    { "key": "mlflow.runName", "value": run_name },
                    { "key": "mlflow.source.name", "value": "musicrl" },
                ],
            }),
        )?;
        let info = &v["run"]["info"];
        let run_id = info["run_id"]
            .as_str()
            .ok_or_else(|| format!("MLflow created no run: {v}"))?
            .to_string();
        let run = Self {
            agent,
            base,
            run_id,
            experiment_id,
            artifact_uri: info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({ "key": key(k), "value": cut(v) }))
            .collect();
        for chunk in params.chunks(PARAMS_PER_BATCH) {
            run.log_batch(json!({ "run_id": run.run_id, "params": chunk }))?;
        }
        Ok(run)
    }

    /// The existing run `run_id` on the server at `url` (to add to a run another process
    /// started: metrics and artifacts may be logged to a finished run).
    pub fn resume(url: &str, run_id: &str) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        let agent = agent();
        let (code, v) = get(
            &agent,
            &format!("{base}/api/2.0/mlflow/runs/get"),
            &[("run_id", run_id)],
        )?;
        if code != 200 {
            return Err(format!("MLflow answered {code} to runs/get {run_id}: {v}"));
        }
        let info = &v["run"]["info"];
        Ok(Self {
            agent,
            base,
            run_id: run_id.to_string(),
            experiment_id: info["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            artifact_uri: info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// Logs `values` at `step` (non-finite values are skipped: JSON cannot carry them).
    pub fn log_metrics(&self, step: i64, values: &[(String, f32)]) -> Result<(), String> {
        let timestamp = now_ms();
        let metrics: Vec<Value> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(
                |(k, v)| json!({ "key": key(k), "value": v, "timestamp": timestamp, "step": step }),
            )
            .collect();
        for chunk in metrics.chunks(METRICS_PER_BATCH) {
            self.log_batch(json!({ "run_id": self.run_id, "metrics": chunk }))?;
        }
        Ok(())
    }

    /// Uploads a file as an artifact (servers that serve artifacts: `mlflow-artifacts:` URIs);
    /// `Ok(false)` when the server keeps artifacts where a client must write them itself.
    pub fn log_artifact(&self, file: &Path) -> Result<bool, String> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| format!("{} has no file name", file.display()))?;
        self.log_artifact_as(file, &name)
    }

    /// Uploads a file as the artifact `name`, a relative path (`audio/clip.wav`) whose parts
    /// are plain file names, so a page and the files it links keep their layout.
    pub fn log_artifact_as(&self, file: &Path, name: &str) -> Result<bool, String> {
        if name.is_empty()
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!("{name:?} is not a relative artifact path"));
        }
        let Some(root) = self.artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(false);
        };
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{name}",
            self.base,
            root.trim_start_matches('/').trim_end_matches('/')
        );
        let response = self
            .agent
            .put(&url)
            .send(&bytes[..])
            .map_err(|e| format!("{url}: {e}"))?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            code => Err(format!("MLflow answered {code} to the upload of {name}")),
        }
    }

    /// Ends the run: `FINISHED`, `FAILED` or `KILLED`.
    pub fn finish(&self, status: &str) -> Result<(), String> {
        post(
            &self.agent,
            &format!("{}/api/2.0/mlflow/runs/update", self.base),
            &json!({ "run_id": self.run_id, "status": status, "end_time": now_ms() }),
        )
        .map(|_| ())
    }

    fn log_batch(&self, body: Value) -> Result<(), String> {
        post(
            &self.agent,
            &format!("{}/api/2.0/mlflow/runs/log-batch", self.base),
            &body,
        )
        .map(|_| ())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A name as MLflow accepts it (alphanumerics, `_`, `-`, `.`, space, `:` and `/`): an index
/// `[0]` becomes `.0`, any other character `_`.
fn key(name: &str) -> String {
    name.replace('[', ".")
        .replace(']', "")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-. :/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cut(v: &str) -> String {
    if v.chars().count() <= MAX_PARAM_CHARS {
        v.to_string()
    } else {
        let mut s: String = v.chars().take(MAX_PARAM_CHARS - 1).collect();
        s.push('…');
        s
    }
}

fn read(response: ureq::http::Response<ureq::Body>, url: &str) -> Result<(u16, Value), String> {
    let code = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((code, v))
}

fn get(agent: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> Result<(u16, Value), String> {
    let mut request = agent.get(url);
    for (k, v) in query {
        request = request.query(*k, *v);
    }
    let response = request.call().map_err(|e| format!("{url}: {e}"))?;
    read(response, url)
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<Value, String> {
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    match read(response, url)? {
        (200..=299, v) => Ok(v),
        (code, v) => Err(format!("MLflow answered {code} to {url}: {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_ones_mlflow_accepts() {
        assert_eq!(
            key("reward.components[0].weight"),
            "reward.components.0.weight"
        );
        assert_eq!(key("component_means/text"), "component_means/text");
        assert_eq!(key("a=b"), "a_b");
    }

    #[test]
    fn long_parameters_are_cut_to_mlflow_s_limit() {
        assert_eq!(cut("0.05"), "0.05");
        let long = "x".repeat(7000);
        let c = cut(&long);
        assert_eq!(c.chars().count(), MAX_PARAM_CHARS);
        assert!(c.ends_with('…'));
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_before_any_call() {
        let err = MlflowRun::start("localhost:5000", "e", "r", &BTreeMap::new())
            .err()
            .expect("refused");
        assert!(err.contains("tracking.mlflow"), "{err}");
    }

    #[test]
    fn a_server_that_is_not_there_is_an_error_not_a_hang() {
        // A port nobody listens on: bound, then dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = MlflowRun::start(
            &format!("http://127.0.0.1:{port}"),
            "e",
            "r",
            &BTreeMap::new(),
        )
        .err()
        .expect("no server");
        assert!(err.contains("get-by-name"), "{err}");
    }
}
