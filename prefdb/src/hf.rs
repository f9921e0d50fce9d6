//! Decisive votes as a Hugging Face `datasets` folder: one Parquet file whose schema carries
//! `datasets`' own feature description, so `datasets.load_dataset(DIR)` (or
//! `load_dataset("parquet", data_files=…)`) gives TRL's `prompt` / `chosen` / `rejected`
//! columns (the melodies in ABC notation), each clip's audio as an `Audio` column
//! (`chosen_audio`, `rejected_audio`: the WAV bytes, as the voters heard them), and musicrl's
//! own columns beside them (token ids, provenance, rater, time, comment, channel).
//!
//! ```text
//! DIR/README.md                              a dataset card: the columns, how to load it
//! DIR/data/train-00000-of-00001.parquet      every vote; row groups of ROWS_PER_GROUP
//! ```
//!
//! The audio is embedded (as `datasets.Audio` stores it: a struct of `bytes` and `path`), so
//! the folder is self-contained and loading needs no audio library; decoding a clip needs
//! what the installed `datasets` decodes with. `read_hf` reads the votes back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{Field, Row};
use parquet::schema::parser::parse_message_type;
use serde::Serialize;

use musicrl_music::{captions, render, tokens};

use crate::error::{Error, Result};
use crate::jsonl::RlhfPair;

/// The Parquet file inside a dataset folder.
pub const DATA: &str = "data/train-00000-of-00001.parquet";
/// Rows a row group (the writer holds one group's audio in memory: ~0.9 MB a vote).
const ROWS_PER_GROUP: usize = 128;

/// The file's schema. The audio structs are optional at both levels, as Arrow's nullable
/// `struct<bytes: binary, path: string>` is: `datasets` takes a column's feature from the
/// metadata only when the file's Arrow field is exactly the feature's. The other columns are
/// required but `comment`.
const SCHEMA: &str = "message musicrl_preferences {
  required binary prompt (STRING);
  required binary chosen (STRING);
  required binary rejected (STRING);
  optional group chosen_audio { optional binary bytes; optional binary path (STRING); }
  optional group rejected_audio { optional binary bytes; optional binary path (STRING); }
  required group chosen_tokens (LIST) { repeated group list { required int32 element; } }
  required group rejected_tokens (LIST) { repeated group list { required int32 element; } }
  required binary chosen_source (STRING);
  required binary rejected_source (STRING);
  required binary rater (STRING);
  required int64 created_at_ms;
  optional binary comment (STRING);
  required boolean chosen_was_a;
  required binary channel (STRING);
}";

/// `datasets`' description of the columns (the `huggingface` key of the file's metadata, as
/// `Dataset.to_parquet` writes it). `Sequence` is read by old and new `datasets` alike.
fn features() -> serde_json::Value {
    let string = serde_json::json!({"dtype": "string", "_type": "Value"});
    let audio = serde_json::json!({"_type": "Audio"});
    let ids =
        serde_json::json!({"feature": {"dtype": "int32", "_type": "Value"}, "_type": "Sequence"});
    serde_json::json!({"info": {"features": {
        "prompt": string, "chosen": string, "rejected": string,
        "chosen_audio": audio, "rejected_audio": audio,
        "chosen_tokens": ids, "rejected_tokens": ids,
        "chosen_source": string, "rejected_source": string, "rater": string,
        "created_at_ms": {"dtype": "int64", "_type": "Value"},
        "comment": string,
        "chosen_was_a": {"dtype": "bool", "_type": "Value"},
        "channel": string,
    }}})
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HfExport {
    /// Votes (rows).
    pub rows: usize,
    /// Bytes of the Parquet file.
    pub bytes: u64,
}

/// A clip's name in its audio struct: a hash of its caption (which sets the instrument and
/// tempo) and its tokens, so the same clip has the same name in every pair.
pub fn clip_file(caption: &str, clip: &[u32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(caption.len() as u64).to_le_bytes());
    h.update(caption.as_bytes());
    for t in clip {
        h.update(&t.to_le_bytes());
    }
    format!("{}.wav", &h.finalize().to_hex().as_str()[..20])
}

/// The WAV bytes of a clip as the voting page plays it.
pub fn clip_wav(caption: &str, clip: &[u32]) -> Vec<u8> {
    let (instrument, bpm) = captions::rendering_for(caption);
    let decoded = tokens::decode(clip);
    let audio = render::render(
        &decoded.events,
        bpm,
        instrument,
        render::DEFAULT_SAMPLE_RATE,
        0,
    );
    render::wav_bytes(&audio, render::DEFAULT_SAMPLE_RATE)
}

fn pq(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Data(format!("{}: {e}", path.display()))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{}: {e}", path.display()))
}

fn text(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// One row group's columns, in the schema's leaf order.
fn write_group(
    group: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
    pairs: &[RlhfPair],
    path: &Path,
    progress: &mut impl FnMut(usize),
) -> Result<()> {
    let strings = |f: fn(&RlhfPair) -> &str| pairs.iter().map(|p| text(f(p))).collect::<Vec<_>>();
    let mut audio = |tokens: fn(&RlhfPair) -> &[u32]| {
        let mut bytes = Vec::with_capacity(pairs.len());
        let mut names = Vec::with_capacity(pairs.len());
        for p in pairs {
            bytes.push(ByteArray::from(clip_wav(&p.prompt, tokens(p))));
            names.push(text(&clip_file(&p.prompt, tokens(p))));
            progress(1);
        }
        (bytes, names)
    };
    let (chosen_wav, chosen_name) = audio(|p| &p.chosen_tokens);
    let (rejected_wav, rejected_name) = audio(|p| &p.rejected_tokens);
    let list = |tokens: fn(&RlhfPair) -> &[u32]| {
        let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
        for p in pairs {
            let t = tokens(p);
            if t.is_empty() {
                def.push(0);
                rep.push(0);
            }
            for (i, &id) in t.iter().enumerate() {
                values.push(id as i32);
                def.push(1);
                rep.push(i16::from(i > 0));
            }
        }
        (values, def, rep)
    };
    let comments: Vec<ByteArray> = pairs
        .iter()
        .filter_map(|p| p.comment.as_deref().map(text))
        .collect();
    let comment_def: Vec<i16> = pairs
        .iter()
        .map(|p| i16::from(p.comment.is_some()))
        .collect();
    let mut column = 0;
    while let Some(mut col) = group.next_column().map_err(pq(path))? {
        let bytes = |col: &mut parquet::file::writer::SerializedColumnWriter<'_>,
                     v: &[ByteArray]| {
            col.typed::<ByteArrayType>().write_batch(v, None, None)
        };
        // Inside an optional struct, an optional field: present at definition level 2.
        let present = vec![2i16; pairs.len()];
        let in_struct = |col: &mut parquet::file::writer::SerializedColumnWriter<'_>,
                         v: &[ByteArray]| {
            col.typed::<ByteArrayType>()
                .write_batch(v, Some(&present), None)
        };
        let written = match column {
            0 => bytes(&mut col, &strings(|p| &p.prompt)),
            1 => bytes(&mut col, &strings(|p| &p.chosen)),
            2 => bytes(&mut col, &strings(|p| &p.rejected)),
            3 => in_struct(&mut col, &chosen_wav),
            4 => in_struct(&mut col, &chosen_name),
            5 => in_struct(&mut col, &rejected_wav),
            6 => in_struct(&mut col, &rejected_name),
            7 | 8 => {
                let (v, d, r) = if column == 7 {
                    list(|p| &p.chosen_tokens)
                } else {
                    list(|p| &p.rejected_tokens)
                };
                col.typed::<Int32Type>().write_batch(&v, Some(&d), Some(&r))
            }
            9 => bytes(&mut col, &strings(|p| &p.chosen_source)),
            10 => bytes(&mut col, &strings(|p| &p.rejected_source)),
            11 => bytes(&mut col, &strings(|p| &p.rater)),
            12 => {
                let v: Vec<i64> = pairs.iter().map(|p| p.created_at_ms).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
            13 => col
                .typed::<ByteArrayType>()
                .write_batch(&comments, Some(&comment_def), None),
            14 => {
                let v: Vec<bool> = pairs.iter().map(|p| p.chosen_was_a).collect();
                col.typed::<BoolType>().write_batch(&v, None, None)
            }
            15 => bytes(&mut col, &strings(|p| &p.channel)),
            n => unreachable!("the schema has 16 leaf columns, not {}", n + 1),
        };
        written.map_err(pq(path))?;
        col.close().map_err(pq(path))?;
        column += 1;
    }
    Ok(())
}

/// Writes the dataset folder `dir` for `pairs` (see the module docs), replacing its data file;
/// `progress(done, total)` is called as clips are rendered (two a vote).
pub fn write_hf(
    dir: &Path,
    pairs: &[RlhfPair],
    mut progress: impl FnMut(usize, usize),
) -> Result<HfExport> {
    if let Some(i) = pairs.iter().position(|p| p.codebooks.is_some()) {
        return Err(Error::Data(format!(
            "vote {} of the export is a pair of audio-token clips: the hf format renders \
             melody clips with the synthesizer; export audio tokens as --format rlhf or store \
             (musicrl codec decode renders them)",
            i + 1
        )));
    }
    let path = dir.join(DATA);
    let parent = path.parent().expect("DATA has a folder");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let schema = Arc::new(parse_message_type(SCHEMA).expect("the schema parses"));
    let props = Arc::new(
        WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "huggingface".to_string(),
                features().to_string(),
            )]))
            .set_created_by("musicrl preferences export".into())
            .build(),
    );
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(pq(&path))?;
    let (total, mut done) = (2 * pairs.len(), 0);
    for chunk in pairs.chunks(ROWS_PER_GROUP) {
        let mut group = writer.next_row_group().map_err(pq(&path))?;
        write_group(&mut group, chunk, &path, &mut |n| {
            done += n;
            progress(done, total);
        })?;
        group.close().map_err(pq(&path))?;
    }
    writer.close().map_err(pq(&path))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    let card = dir.join("README.md");
    std::fs::write(&card, card_text(pairs.len())).map_err(io(&card))?;
    Ok(HfExport {
        rows: pairs.len(),
        bytes: std::fs::metadata(&path).map_err(io(&path))?.len(),
    })
}

/// The data file of a dataset folder, or the file itself.
fn data_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(DATA)
    } else {
        path.to_path_buf()
    }
}

fn column<'a>(row: &'a Row, name: &str, at: &str) -> Result<&'a Field> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, f)| f)
        .ok_or_else(|| Error::Data(format!("{at}: no column {name:?}")))
}

fn string(row: &Row, name: &str, at: &str) -> Result<String> {
    match column(row, name, at)? {
        Field::Str(s) => Ok(s.clone()),
        other => Err(Error::Data(format!("{at}: {name} is {other:?}, not text"))),
    }
}

fn ids(row: &Row, name: &str, at: &str) -> Result<Vec<u32>> {
    match column(row, name, at)? {
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|f| match f {
                Field::Int(i) if *i >= 0 => Ok(*i as u32),
                other => Err(Error::Data(format!("{at}: {name} holds {other:?}"))),
            })
            .collect(),
        other => Err(Error::Data(format!(
            "{at}: {name} is {other:?}, not a list"
        ))),
    }
}

/// Reads the votes of a dataset folder (or of its Parquet file), validating every row; an
/// error names the file and row.
pub fn read_hf(path: &Path) -> Result<Vec<RlhfPair>> {
    let file = data_file(path);
    let reader = SerializedFileReader::try_from(file.as_path()).map_err(pq(&file))?;
    let mut out = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let at = format!("{} row {}", file.display(), i + 1);
        let row = row.map_err(|e| Error::Data(format!("{at}: {e}")))?;
        let pair = RlhfPair {
            prompt: string(&row, "prompt", &at)?,
            chosen: string(&row, "chosen", &at)?,
            rejected: string(&row, "rejected", &at)?,
            chosen_tokens: ids(&row, "chosen_tokens", &at)?,
            rejected_tokens: ids(&row, "rejected_tokens", &at)?,
            chosen_source: string(&row, "chosen_source", &at)?,
            rejected_source: string(&row, "rejected_source", &at)?,
            rater: string(&row, "rater", &at)?,
            created_at_ms: match column(&row, "created_at_ms", &at)? {
                Field::Long(v) => *v,
                other => return Err(Error::Data(format!("{at}: created_at_ms is {other:?}"))),
            },
            comment: match column(&row, "comment", &at)? {
                Field::Null => None,
                Field::Str(s) => Some(s.clone()),
                other => return Err(Error::Data(format!("{at}: comment is {other:?}"))),
            },
            chosen_was_a: match column(&row, "chosen_was_a", &at)? {
                Field::Bool(b) => *b,
                other => return Err(Error::Data(format!("{at}: chosen_was_a is {other:?}"))),
            },
            channel: string(&row, "channel", &at)?,
            // The hf format holds melody pairs only (`write_hf` refuses audio tokens).
            codebooks: None,
        };
        pair.validate(&at)?;
        out.push(pair);
    }
    Ok(out)
}

/// The dataset card.
fn card_text(rows: usize) -> String {
    format!(
        "---\npretty_name: musicrl preferences\ntask_categories:\n- text-to-audio\n\
configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {DATA}\n---\n\n\
# musicrl preferences\n\n\
{rows} decisive votes (ties and both-bad votes stay in the database), exported by \
`musicrl preferences export --format hf`.\n\n\
```python\nimport datasets\nds = datasets.load_dataset(\"path/to/this/folder\", split=\"train\")\n\
ds[0][\"prompt\"], ds[0][\"chosen_audio\"]  # the caption, the chosen clip (decoded by datasets)\n\
ds.cast_column(\"chosen_audio\", datasets.Audio(decode=False))[0][\"chosen_audio\"][\"bytes\"]  # the WAV file\n```\n\n\
| column | what it is |\n|---|---|\n\
| `prompt` | the caption both clips were generated for |\n\
| `chosen`, `rejected` | the two melodies in ABC notation (key and meter as written) |\n\
| `chosen_audio`, `rejected_audio` | the clips as the voters heard them (WAV, 16-bit mono, 22,050 Hz) |\n\
| `chosen_tokens`, `rejected_tokens` | the policy's token ids |\n\
| `chosen_source`, `rejected_source` | where each clip came from (a policy version, a checkpoint, `import`) |\n\
| `chosen_was_a` | whether the chosen clip was shown first (side A) |\n\
| `rater` | an opaque rater id |\n\
| `channel` | how the vote arrived: `web` (the voting page), `bot` (`musicrl feedback bot`), `import` |\n\
| `created_at_ms` | the vote's time, Unix milliseconds |\n\
| `comment` | the rater's comment, if any |\n\n\
`musicrl preferences import FOLDER` reads it back.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(chosen: Vec<u32>, rejected: Vec<u32>, comment: Option<&str>) -> RlhfPair {
        RlhfPair {
            prompt: "a slow jig in D major, played on fiddle".into(),
            chosen: "X:1\nK:D\nd2e|]\n".into(),
            rejected: "X:1\nK:D\nA2B|]\n".into(),
            chosen_tokens: chosen,
            rejected_tokens: rejected,
            chosen_source: "v3".into(),
            rejected_source: "v2".into(),
            rater: "r1".into(),
            created_at_ms: 1_700_000_000_000,
            comment: comment.map(String::from),
            chosen_was_a: false,
            channel: "bot".into(),
            codebooks: None,
        }
    }

    #[test]
    fn a_folder_round_trips_every_column() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // More rows than a row group, comments present and absent, lists of several lengths.
        let pairs: Vec<RlhfPair> = (0..ROWS_PER_GROUP as u32 + 3)
            .map(|i| {
                pair(
                    (1..(3 + i % 5)).collect(),
                    vec![5 + i % 7],
                    (i % 3 == 0).then_some("livelier"),
                )
            })
            .collect();
        let mut last = (0, 0);
        let done = write_hf(dir.path(), &pairs, |d, t| last = (d, t)).expect("export");
        assert_eq!(done.rows, pairs.len());
        assert_eq!(last, (2 * pairs.len(), 2 * pairs.len()));
        assert_eq!(read_hf(dir.path()).expect("read back"), pairs);
        let card = std::fs::read_to_string(dir.path().join("README.md")).expect("a card");
        assert!(
            card.contains(DATA) && card.contains("load_dataset"),
            "{card}"
        );
    }

    #[test]
    fn the_audio_is_the_clip_as_heard_and_the_features_say_so() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let p = pair(vec![1, 2, 3, 4], vec![5, 6, 7], None);
        write_hf(dir.path(), std::slice::from_ref(&p), |_, _| {}).expect("export");
        let reader =
            SerializedFileReader::try_from(dir.path().join(DATA).as_path()).expect("opens");
        let meta = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .key_value_metadata()
            .expect("key-value metadata")
            .iter()
            .find(|kv| kv.key == "huggingface")
            .and_then(|kv| kv.value.clone())
            .expect("datasets' features");
        let features: serde_json::Value = serde_json::from_str(&meta).expect("JSON");
        assert_eq!(
            features["info"]["features"]["chosen_audio"]["_type"],
            "Audio"
        );
        let row = reader.into_iter().next().expect("a row").expect("reads");
        let Field::Group(audio) = column(&row, "chosen_audio", "row").expect("a column") else {
            panic!("chosen_audio is a struct");
        };
        let Field::Bytes(wav) = column(audio, "bytes", "row").expect("bytes") else {
            panic!("bytes");
        };
        assert_eq!(wav.data(), clip_wav(&p.prompt, &p.chosen_tokens).as_slice());
        assert_eq!(&wav.data()[..4], b"RIFF");
        assert_eq!(
            string(audio, "path", "row").expect("path"),
            clip_file(&p.prompt, &p.chosen_tokens)
        );
    }

    #[test]
    fn a_bad_channel_is_named_by_row() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut p = pair(vec![1, 2], vec![3], None);
        p.channel = "Bot; DROP".into();
        let err = write_hf(dir.path(), &[p], |_, _| {})
            .and_then(|_| read_hf(dir.path()))
            .expect_err("a bad channel is refused");
        assert!(err.to_string().contains("row 1"), "{err}");
        assert!(err.to_string().contains("channel"), "{err}");
    }
}
