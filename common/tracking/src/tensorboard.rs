//! TensorBoard event files, written without TensorFlow: a file of TFRecords, each a
//! `tensorflow.Event` protocol buffer (`tensorflow/core/util/event.proto`), which stock
//! TensorBoard (`tensorboard --logdir DIR`) and `wandb sync --sync-tensorboard` read.
//!
//! A TFRecord is `length: u64 LE`, `masked_crc32c(length): u32 LE`, `data`,
//! `masked_crc32c(data): u32 LE`, where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The
//! first event of a file carries `file_version = "brain.Event:2"`; then each event a step and
//! a wall time and a `Summary` of values: a scalar (`simple_value`), a text (a string tensor
//! under the `text` plugin) or an audio clip (a WAV file, the legacy `Summary.Audio` that
//! TensorBoard's audio plugin reads). Only the fields written here are declared.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "6")]
    pub audio: Option<Audio>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `tensorflow.Summary.Audio`.
#[derive(Clone, PartialEq, Message)]
pub struct Audio {
    #[prost(float, tag = "1")]
    pub sample_rate: f32,
    #[prost(int64, tag = "2")]
    pub num_channels: i64,
    #[prost(int64, tag = "3")]
    pub length_frames: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_audio_string: Vec<u8>,
    #[prost(string, tag = "5")]
    pub content_type: String,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto`, only as a string scalar.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `DT_STRING` = 7.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` (no dimensions: a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {}

const DT_STRING: i32 = 7;

/// TFRecord's masked CRC-32C.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes one TensorBoard run: a new event file in a folder (TensorBoard shows each folder
/// under its `--logdir` as a run; several files in one folder, as after a resume, are one run).
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` and a new `events.out.tfevents.<unix seconds>.<host>.<pid>` in it, and
    /// writes the file-version event.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now.as_secs(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        let mut w = Self {
            file: BufWriter::new(file),
            path,
        };
        w.write_event(&Event {
            wall_time: now.as_secs_f64(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event of scalars at `step`; non-finite values are skipped (TensorBoard cannot
    /// plot them).
    pub fn scalars(
        &mut self,
        step: i64,
        wall_time: f64,
        values: &[(String, f32)],
    ) -> std::io::Result<()> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| Value {
                tag: tag.clone(),
                simple_value: Some(*v),
                ..Value::default()
            })
            .collect();
        self.write_summary(step, wall_time, value)
    }

    /// A text (Markdown) at `step`, shown on TensorBoard's Text tab.
    pub fn text(
        &mut self,
        tag: &str,
        step: i64,
        wall_time: f64,
        text: &str,
    ) -> std::io::Result<()> {
        let value = Value {
            tag: tag.into(),
            tensor: Some(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShapeProto {}),
                string_val: vec![text.as_bytes().to_vec()],
            }),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                    content: Vec::new(),
                }),
            }),
            ..Value::default()
        };
        self.write_summary(step, wall_time, vec![value])
    }

    /// An audio clip (a mono WAV file's bytes, `frames` samples at `sample_rate`) at `step`,
    /// shown on TensorBoard's Audio tab.
    pub fn audio(
        &mut self,
        tag: &str,
        step: i64,
        wall_time: f64,
        wav: &[u8],
        sample_rate: u32,
        frames: usize,
    ) -> std::io::Result<()> {
        let value = Value {
            tag: tag.into(),
            audio: Some(Audio {
                sample_rate: sample_rate as f32,
                num_channels: 1,
                length_frames: frames as i64,
                encoded_audio_string: wav.to_vec(),
                content_type: "audio/wav".into(),
            }),
            ..Value::default()
        };
        self.write_summary(step, wall_time, vec![value])
    }

    /// Writes what is buffered to the file (TensorBoard reads files as they grow).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().map_err(|e| with_path(e, &self.path))
    }

    fn write_summary(
        &mut self,
        step: i64,
        wall_time: f64,
        value: Vec<Value>,
    ) -> std::io::Result<()> {
        if value.is_empty() {
            return Ok(());
        }
        self.write_event(&Event {
            wall_time,
            step,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    fn write_event(&mut self, event: &Event) -> std::io::Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| with_path(e, &self.path))
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads an event file back, checking every record's two checksums; an error names the file
/// and the byte offset of the bad record.
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| with_path(e, path))?;
    let bad = |at: usize, what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: the record at byte {at} {what}", path.display()),
        )
    };
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| bad(at, "is cut short"))?;
        let len_bytes: [u8; 8] = header[..8].try_into().expect("8 bytes");
        if u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"))
            != masked_crc32c(&len_bytes)
        {
            return Err(bad(at, "has a bad length checksum"));
        }
        let len =
            usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad(at, "is too long"))?;
        let end = at
            .checked_add(12 + len + 4)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad(at, "is cut short"))?;
        let data = &bytes[at + 12..at + 12 + len];
        if u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes"))
            != masked_crc32c(data)
        {
            return Err(bad(at, "has a bad data checksum"));
        }
        events.push(Event::decode(data).map_err(|e| bad(at, &format!("is not an Event: {e}")))?);
        at = end;
    }
    Ok(events)
}

/// The numbers of a JSON object as scalars, for one row of a history: each number (and each
/// boolean, as 0 or 1) under its key, each `[name, number]` pair of an array under
/// `key/name`; strings, `skip` keys and nested objects are left out.
pub fn scalars_of(row: &serde_json::Value, skip: &[&str]) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    let Some(map) = row.as_object() else {
        return out;
    };
    for (key, v) in map {
        if skip.contains(&key.as_str()) {
            continue;
        }
        match v {
            serde_json::Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((key.clone(), x as f32));
                }
            }
            serde_json::Value::Bool(b) => out.push((key.clone(), f32::from(u8::from(*b)))),
            serde_json::Value::Array(items) => {
                for item in items {
                    if let Some(
                        [
                            serde_json::Value::String(name),
                            serde_json::Value::Number(n),
                        ],
                    ) = item.as_array().map(Vec::as_slice)
                        && let Some(x) = n.as_f64()
                    {
                        out.push((format!("{key}/{name}"), x as f32));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_checksum_of_the_standard_check_string() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720, appendix B.4); masked:
        // rotate right by 15 → 0x2507c60d, plus 0xa282ead8 → 0xc78ab0e5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn events_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("runs/local");
        let mut w = EventWriter::create(&run).expect("creates");
        w.scalars(
            1,
            10.5,
            &[
                ("kl".into(), 0.25),
                ("loss".into(), f32::NAN),
                ("reward_mean".into(), 1.5),
            ],
        )
        .expect("scalars");
        w.text("config", 0, 10.0, "[learner]\nsteps = 3")
            .expect("text");
        w.audio("sample/0", 2, 11.0, b"RIFF....WAVE", 16_000, 4)
            .expect("audio");
        w.flush().expect("flush");
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events = read_events(w.path()).expect("reads back");
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let scalars = &events[1].summary.as_ref().unwrap().value;
        assert_eq!((events[1].step, events[1].wall_time), (1, 10.5));
        // The NaN is left out.
        let got: Vec<(&str, f32)> = scalars
            .iter()
            .map(|v| (v.tag.as_str(), v.simple_value.unwrap()))
            .collect();
        assert_eq!(got, vec![("kl", 0.25), ("reward_mean", 1.5)]);
        let text = &events[2].summary.as_ref().unwrap().value[0];
        assert_eq!(
            text.tensor.as_ref().unwrap().string_val[0],
            b"[learner]\nsteps = 3"
        );
        assert_eq!(
            text.metadata
                .as_ref()
                .unwrap()
                .plugin_data
                .as_ref()
                .unwrap()
                .plugin_name,
            "text"
        );
        let audio = events[3].summary.as_ref().unwrap().value[0]
            .audio
            .clone()
            .unwrap();
        assert_eq!((audio.sample_rate, audio.length_frames), (16_000.0, 4));
        assert_eq!(audio.content_type, "audio/wav");

        // A flipped byte is caught by the checksum, with the file and offset named.
        let mut bytes = std::fs::read(w.path()).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(w.path(), &bytes).unwrap();
        let err = read_events(w.path()).unwrap_err().to_string();
        assert!(
            err.contains("checksum") && err.contains("tfevents"),
            "{err}"
        );
    }

    #[test]
    fn a_history_row_becomes_scalars() {
        let row = serde_json::json!({
            "time": "2026-12-07T00:00:00Z",
            "unix_seconds": 5.0,
            "step": 3,
            "kl": 0.5,
            "value_warmup": true,
            "component_means": [["text", 0.25], ["form", 0.75]],
        });
        let mut got = scalars_of(&row, &["step", "unix_seconds"]);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("component_means/form".to_string(), 0.75),
                ("component_means/text".to_string(), 0.25),
                ("kl".to_string(), 0.5),
                ("value_warmup".to_string(), 1.0),
            ]
        );
    }
}
