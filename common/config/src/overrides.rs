//! Setting any configuration key by name: `--set learner.kl_coef=0.05` on the command line,
//! `MUSICRL__LEARNER__KL_COEF=0.05` in the environment, and the short environment names the
//! manifests have always used (`MUSICRL_LEARNER_URL`, …), which are aliases of keys.
//!
//! A key is a dotted path through the TOML sections (`reward.components[0].weight`, or
//! `reward.components.0.weight`). The value is read as the type the key already has: a
//! string is taken as written, a number or a boolean must parse as one, an array or table is
//! read as a TOML inline value (`--set 'reward.components=[{kind="text"}]'`). A key the
//! configuration does not have is an error naming it (and the nearest key it has), never
//! ignored.
//!
//! Precedence, lowest first: embedded default → file → environment → `--set` → a named flag
//! of the subcommand. This module must never read files or bind anything.

use serde::Deserialize;
use toml::Value;

use super::Config;
use crate::ConfigError;

/// The prefix of environment variables that name a key: `MUSICRL__SECTION__KEY`.
pub const ENV_PREFIX: &str = "MUSICRL__";

/// Short environment names kept from the named flags, as aliases of keys (the Kubernetes
/// manifests and older scripts use them). `MUSICRL__…` spells every other key.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("MUSICRL_LOCAL_STEPS", "local.steps"),
    ("MUSICRL_LOCAL_ACTORS", "local.actors"),
    ("MUSICRL_LOCAL_OUT", "local.out"),
    ("MUSICRL_LEARNER_LISTEN", "learner.listen"),
    ("MUSICRL_LEARNER_METRICS_LISTEN", "learner.metrics_listen"),
    ("MUSICRL_LEARNER_STEPS", "learner.steps"),
    ("MUSICRL_CHECKPOINT_DIR", "learner.checkpoint_dir"),
    ("MUSICRL_INIT_POLICY", "learner.init_policy"),
    ("MUSICRL_REFERENCE_POLICY", "learner.reference_policy"),
    ("MUSICRL_HISTORY", "learner.history_path"),
    ("MUSICRL_LEARNER_BATCH_SIZE", "learner.batch_size"),
    ("MUSICRL_LEARNER_SEED", "learner.seed"),
    ("MUSICRL_LEARNER_URL", "actor.learner"),
    ("MUSICRL_REWARD_URL", "actor.reward"),
    ("MUSICRL_ACTOR_METRICS_LISTEN", "actor.metrics_listen"),
    ("MUSICRL_ACTOR_BATCH_SIZE", "actor.batch_size"),
    ("MUSICRL_PROMPTS", "actor.prompts"),
    ("MUSICRL_ACTOR_SEED", "actor.seed"),
    ("MUSICRL_REWARD_LISTEN", "reward.listen"),
    ("MUSICRL_REWARD_METRICS_LISTEN", "reward.metrics_listen"),
    ("MUSICRL_REWARD_MAX_BATCH", "reward.max_batch"),
    ("MUSICRL_CORPUS", "pretrain.corpus"),
    ("MUSICRL_RUN", "run.name"),
];

/// Environment variables that are not keys but are read elsewhere (so the environment layer
/// neither applies nor rejects them).
const ENV_NOT_KEYS: &[&str] = &[
    "MUSICRL_CONFIG",
    "MUSICRL_ACTOR_ID",
    "MUSICRL_LOG_FORMAT",
    "MUSICRL_HOME",
];

/// Whether `name` is one of the variables Kubernetes injects for every Service of the
/// namespace (`MUSICRL_LEARNER_SERVICE_HOST`, `MUSICRL_LEARNER_PORT_50051_TCP_ADDR`, …), which
/// share our prefix because the Services are named `musicrl-…`. The manifests turn them off
/// (`enableServiceLinks: false`); this keeps a pod that has them from being refused.
fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") {
        return true;
    }
    if name.ends_with("_PORT") {
        return true;
    }
    // …_PORT_<number>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]
    if let Some(i) = name.rfind("_PORT_") {
        let rest = &name[i + "_PORT_".len()..];
        let mut parts = rest.split('_');
        let number = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        let proto = parts
            .next()
            .is_some_and(|p| ["TCP", "UDP", "SCTP"].contains(&p));
        return number && proto;
    }
    false
}

/// One path segment: a table key or an array index.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_key(key: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && out.is_empty() {
            return Err("a key starts with a section name".into());
        }
        if !name.is_empty() {
            if let Ok(i) = name.parse::<usize>() {
                out.push(Segment::Index(i));
            } else if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(Segment::Key(name.to_string()));
            } else {
                return Err(format!("{name:?} is not a key name"));
            }
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("an unclosed [")?;
            let i = r[..end]
                .parse::<usize>()
                .map_err(|_| format!("[{}] is not an index", &r[..end]))?;
            out.push(Segment::Index(i));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(format!("unexpected {rest:?}"));
        }
    }
    if out.is_empty() {
        return Err("an empty key".into());
    }
    Ok(out)
}

/// Every leaf of a TOML value as `dotted.key → value` (TOML text; arrays of tables as
/// `x[0].y`).
fn leaves(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        Value::Array(a) if a.iter().all(Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Every leaf of the configuration as `dotted.key → value` (TOML text), for comparing two
/// configurations key by key.
pub fn flatten(config: &Config) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    if let Ok(v) = Value::try_from(config) {
        leaves("", &v, &mut out);
    }
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key nearest to `key`, if it is close.
fn nearest(root: &Value, key: &str) -> Option<String> {
    let mut keys = std::collections::BTreeMap::new();
    leaves("", root, &mut keys);
    keys.into_keys()
        .map(|k| (edit_distance(&k, key), k))
        .filter(|(d, _)| *d <= 4)
        .min()
        .map(|(_, k)| k)
}

/// Reads `text` as a value of the same TOML type as `like`.
fn typed_value(like: &Value, text: &str) -> Result<Value, String> {
    let inline = |text: &str| -> Result<Value, String> {
        let doc: toml::Table =
            toml::from_str(&format!("v = {text}")).map_err(|e| e.message().to_string())?;
        doc.get("v").cloned().ok_or_else(|| "no value".to_string())
    };
    match like {
        Value::String(_) => Ok(Value::String(text.to_string())),
        Value::Integer(_) => text
            .trim()
            .replace('_', "")
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{text:?} is not an integer")),
        Value::Float(_) => text
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("{text:?} is not a number")),
        Value::Boolean(_) => match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        Value::Array(_) | Value::Table(_) | Value::Datetime(_) => inline(text),
    }
}

fn describe(segments: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Segment::Key(k) if s.is_empty() => s.push_str(k),
            Segment::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Config {
    /// Sets one key from its text, as `--set KEY=VALUE` does. `origin` names where the
    /// setting came from in errors (`--set`, or the environment variable).
    pub fn set_key(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = |why: String| ConfigError::Override {
            origin: origin.to_string(),
            key: key.to_string(),
            why,
        };
        let segments = parse_key(key).map_err(invalid)?;
        let mut root = Value::try_from(&*self).map_err(|e| invalid(e.to_string()))?;
        let snapshot = root.clone();
        let mut at = &mut root;
        for (depth, seg) in segments.iter().enumerate() {
            let here = describe(&segments[..=depth]);
            at = match (seg, at) {
                (Segment::Key(k), Value::Table(t)) => match t.get_mut(k) {
                    Some(v) => v,
                    None => {
                        let hint = nearest(&snapshot, &describe(&segments))
                            .map(|n| format!(" (did you mean {n}?)"))
                            .unwrap_or_default();
                        return Err(invalid(format!(
                            "the configuration has no key {here}{hint}; `musicrl config` prints every key"
                        )));
                    }
                },
                (Segment::Index(i), Value::Array(a)) => {
                    let n = a.len();
                    match a.get_mut(*i) {
                        Some(v) => v,
                        None => {
                            return Err(invalid(format!(
                                "{here}: index {i} is past the end ({n} entries)"
                            )));
                        }
                    }
                }
                (Segment::Index(_), _) => {
                    return Err(invalid(format!("{here}: not a list")));
                }
                (Segment::Key(_), _) => {
                    return Err(invalid(format!(
                        "{} is a value, not a section",
                        describe(&segments[..depth])
                    )));
                }
            };
        }
        *at = typed_value(at, value).map_err(invalid)?;
        *self = Config::deserialize(root).map_err(|e| invalid(e.to_string()))?;
        Ok(())
    }

    /// Applies `KEY=VALUE` settings in order (the `--set` flags).
    pub fn apply_sets(&mut self, sets: &[String]) -> Result<(), ConfigError> {
        for s in sets {
            let Some((key, value)) = s.split_once('=') else {
                return Err(ConfigError::Override {
                    origin: "--set".into(),
                    key: s.clone(),
                    why: "expected KEY=VALUE, e.g. --set learner.kl_coef=0.05".into(),
                });
            };
            self.set_key(key.trim(), value, "--set")?;
        }
        Ok(())
    }

    /// Applies the environment: `MUSICRL__SECTION__KEY` (lower-cased; a number is an index:
    /// `MUSICRL__REWARD__COMPONENTS__0__WEIGHT`) and the short aliases of [`ENV_ALIASES`].
    /// Aliases apply first, so a `MUSICRL__` spelling of the same key wins. An unknown
    /// `MUSICRL_…` variable is an error: a misspelt variable must not be silently ignored.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("MUSICRL_"))
            .collect();
        vars.sort();
        let mut long = Vec::new();
        for (name, value) in &vars {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let key = rest
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                long.push((name, key, value));
            } else if let Some((_, key)) = ENV_ALIASES.iter().find(|(a, _)| a == name) {
                self.set_key(key, value, name)?;
            } else if name == "MUSICRL_DEVICE" {
                return Err(ConfigError::Override {
                    origin: name.clone(),
                    key: name.clone(),
                    why: "is not read any more: the device is a key of each role — set \
                          MUSICRL__LEARNER__DEVICE, MUSICRL__ACTOR__DEVICE and \
                          MUSICRL__REWARD__DEVICE (\"cpu\" or \"cuda:N\")"
                        .into(),
                });
            } else if !ENV_NOT_KEYS.contains(&name.as_str()) && !is_service_link(name) {
                return Err(ConfigError::Override {
                    origin: name.clone(),
                    key: name.clone(),
                    why: format!(
                        "is not a musicrl variable: keys are spelt {ENV_PREFIX}SECTION__KEY \
                         (e.g. MUSICRL__LEARNER__KL_COEF), the short names are {}",
                        ENV_ALIASES
                            .iter()
                            .map(|(a, _)| *a)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        for (name, key, value) in long {
            self.set_key(&key, value, name)?;
        }
        Ok(())
    }

    /// The file (or the embedded default), then the environment, then `--set`.
    pub fn load_layered(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let mut c = Self::load(file)?;
        c.apply_env(env)?;
        c.apply_sets(sets)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn keys_parse_in_both_spellings() {
        assert_eq!(
            parse_key("reward.components[1].weight").unwrap(),
            parse_key("reward.components.1.weight").unwrap()
        );
        assert!(parse_key("").is_err());
        assert!(parse_key("learner.kl-coef").is_err());
        assert!(parse_key("a[x]").is_err());
    }

    #[test]
    fn set_overrides_a_nested_key_by_its_type() {
        let mut c = Config::default();
        c.set_key("learner.kl_coef", "0.05", "--set").unwrap();
        assert_eq!(c.learner.kl_coef, 0.05);
        c.set_key("learner.steps", "1_000", "--set").unwrap();
        assert_eq!(c.learner.steps, 1000);
        c.set_key("reward.components[1].weight", "2", "--set")
            .unwrap();
        assert_eq!(c.reward.components[1].weight, 2.0);
        c.set_key("actor.synchronous", "true", "--set").unwrap();
        assert!(c.actor.synchronous);
        c.set_key("learner.checkpoint_dir", "/tmp/x y", "--set")
            .unwrap();
        assert_eq!(c.learner.checkpoint_dir, PathBuf::from("/tmp/x y"));
        c.set_key(
            "reward.components",
            r#"[{kind = "token-fraction", target_below = 8}]"#,
            "--set",
        )
        .unwrap();
        assert_eq!(c.reward.components.len(), 1);
        assert_eq!(c.reward.components[0].target_below, 8);
    }

    #[test]
    fn a_misspelt_key_or_a_bad_value_is_an_error_naming_it() {
        let mut c = Config::default();
        let e = c
            .set_key("learner.kl_coeff", "0.1", "--set")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learner.kl_coeff"), "{e}");
        assert!(e.contains("did you mean learner.kl_coef"), "{e}");
        let e = c
            .set_key("learner.steps", "many", "--set")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("learner.steps") && e.contains("not an integer"),
            "{e}"
        );
        let e = c
            .set_key("reward.components[7].weight", "1", "--set")
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the end"), "{e}");
        let e = c
            .apply_sets(&["learner.steps".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
        assert_eq!(c, Config::default(), "a refused setting changes nothing");
    }

    #[test]
    fn the_environment_sets_keys_and_refuses_unknown_variables() {
        let mut c = Config::default();
        c.apply_env([
            ("MUSICRL__LEARNER__KL_COEF".to_string(), "0.1".to_string()),
            ("MUSICRL_LEARNER_URL".into(), "http://l:1".into()),
            ("MUSICRL__REWARD__COMPONENTS__0__WEIGHT".into(), "3".into()),
            ("MUSICRL_CONFIG".into(), "ignored.toml".into()),
            ("PATH".into(), "/bin".into()),
        ])
        .unwrap();
        assert_eq!(c.learner.kl_coef, 0.1);
        assert_eq!(c.actor.learner, "http://l:1");
        assert_eq!(c.reward.components[0].weight, 3.0);
        // The long spelling wins over the alias of the same key.
        let mut c = Config::default();
        c.apply_env([
            ("MUSICRL_LEARNER_STEPS".to_string(), "5".to_string()),
            ("MUSICRL__LEARNER__STEPS".into(), "7".into()),
        ])
        .unwrap();
        assert_eq!(c.learner.steps, 7);
        let e = Config::default()
            .apply_env([("MUSICRL_LERNER_STEPS".to_string(), "5".to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MUSICRL_LERNER_STEPS"), "{e}");
        // Kubernetes' service links for Services named musicrl-… are not settings.
        Config::default()
            .apply_env([
                (
                    "MUSICRL_LEARNER_SERVICE_HOST".to_string(),
                    "10.0.0.1".to_string(),
                ),
                ("MUSICRL_LEARNER_SERVICE_PORT_GRPC".into(), "50051".into()),
                ("MUSICRL_LEARNER_PORT".into(), "tcp://10.0.0.1:50051".into()),
                (
                    "MUSICRL_REWARD_SERVER_PORT_50052_TCP_ADDR".into(),
                    "10.0.0.2".into(),
                ),
            ])
            .expect("service links are ignored");
        let e = Config::default()
            .apply_env([("MUSICRL_DEVICE".to_string(), "cuda".to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MUSICRL__LEARNER__DEVICE"), "{e}");
    }

    #[test]
    fn layers_apply_in_order() {
        let c = Config::load_layered(
            None,
            [("MUSICRL__LEARNER__STEPS".to_string(), "5".to_string())],
            &["learner.steps=9".into()],
        )
        .unwrap();
        assert_eq!(c.learner.steps, 9, "--set wins over the environment");
    }

    #[test]
    fn every_alias_names_a_real_key() {
        for (alias, key) in ENV_ALIASES {
            let mut c = Config::default();
            let mut root = Value::try_from(&c).unwrap();
            assert!(flatten(&c).contains_key(*key), "{alias} -> {key}");
            // And setting it through the alias round-trips its current value.
            let current = key
                .split('.')
                .fold(&mut root, |v, k| v.get_mut(k).expect("present"))
                .clone();
            let text = match current {
                Value::String(s) => s,
                other => other.to_string(),
            };
            c.set_key(key, &text, alias).unwrap();
            assert_eq!(c, Config::default(), "{alias}");
        }
    }
}
