//! A trained MusicGen policy as a Hugging Face folder that transformers loads
//! (`MusicgenForConditionalGeneration.from_pretrained(OUT)`).
//!
//! The folder is the source folder with its decoder replaced: every file but the weights is
//! copied (config, tokenizer, generation and processor settings), and one
//! `model.safetensors` holds every source tensor unchanged (the text encoder, the
//! projection, the codec, in their own dtype) except the decoder's, which are the trained
//! ones in f32 by their transformers names ([`Decoder::named_tensors`]); adapters are
//! merged first ([`super::rl::Trainable::merged_decoder`]). Each replaced tensor must
//! exist in the source with the same shape, so an export can only describe the model it
//! was trained from. The header's metadata says `format = "pt"` (what transformers
//! expects) and where the weights came from.
//!
//! Memory: the source's weights are read whole, so an export needs about the folder's size
//! in RAM plus the decoder in f32.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::decoder::Decoder;
use crate::PolicyError;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The weights file written.
    pub weights: PathBuf,
    /// Tensors in it, and how many of them are the trained decoder's.
    pub tensors: usize,
    pub replaced: usize,
    /// Other files copied from the source folder.
    pub copied: Vec<String>,
}

/// Whether a source file is weights (not copied: the export writes its own).
fn is_weights(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name.ends_with(".safetensors.index.json")
        || name.ends_with(".bin")
        || name.ends_with(".bin.index.json")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PolicyError + '_ {
    move |error| PolicyError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `decoder` into a copy of the MusicGen folder `source` at `out` (created; refused
/// when it is the source or already holds files). `metadata` joins the header's.
pub fn write_folder(
    source: &Path,
    decoder: &Decoder,
    out: &Path,
    metadata: &[(&str, String)],
) -> Result<Exported, PolicyError> {
    let refuse = |why: String| PolicyError::Folder {
        path: out.to_path_buf(),
        why,
    };
    if out.exists() {
        let same = std::fs::canonicalize(out).ok() == std::fs::canonicalize(source).ok();
        if same {
            return Err(refuse(
                "is the source folder: export to a new folder".into(),
            ));
        }
        let mut entries = std::fs::read_dir(out).map_err(io(out))?;
        if entries.next().is_some() {
            return Err(refuse(
                "exists and is not empty: export to a new or empty folder (nothing was written)"
                    .into(),
            ));
        }
    }
    let (_, files) = super::weight_files(source)?;
    let blobs = files
        .iter()
        .map(|f| std::fs::read(f).map_err(io(f)))
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = files
        .iter()
        .zip(&blobs)
        .map(|(f, b)| {
            SafeTensors::deserialize(b).map_err(|e| PolicyError::Folder {
                path: f.clone(),
                why: format!("not a safetensors file: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let trained: HashMap<String, (Vec<usize>, Vec<u8>)> = decoder
        .named_tensors()
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, (shape, bytes))
        })
        .collect();
    let mut views: BTreeMap<String, TensorView<'_>> = BTreeMap::new();
    let mut replaced = 0;
    for (file, st) in files.iter().zip(&parsed) {
        for (name, view) in st.tensors() {
            let view = match trained.get(&name) {
                Some((shape, bytes)) => {
                    if view.shape() != shape.as_slice() {
                        return Err(PolicyError::Folder {
                            path: file.clone(),
                            why: format!(
                                "{name} is {:?} in the source but {shape:?} in the trained \
                                 decoder: the policy was not trained from this folder",
                                view.shape()
                            ),
                        });
                    }
                    replaced += 1;
                    TensorView::new(Dtype::F32, shape.clone(), bytes)
                        .map_err(|e| PolicyError::Internal(format!("{name}: {e}")))?
                }
                None => view,
            };
            views.insert(name, view);
        }
    }
    if let Some(missing) = trained.keys().find(|n| !views.contains_key(*n)) {
        return Err(PolicyError::Folder {
            path: source.to_path_buf(),
            why: format!("has no {missing}: the policy was not trained from this folder"),
        });
    }

    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(source).map_err(io(source))? {
        let entry = entry.map_err(io(source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() || is_weights(&name) {
            continue;
        }
        std::fs::copy(entry.path(), out.join(&name)).map_err(io(&entry.path()))?;
        copied.push(name);
    }
    copied.sort_unstable();
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    meta.insert("format".into(), "pt".into());
    let weights = out.join("model.safetensors");
    let tensors = views.len();
    safetensors::serialize_to_file(views, Some(meta), &weights)
        .map_err(|e| PolicyError::Internal(format!("writing {}: {e}", weights.display())))?;
    Ok(Exported {
        weights,
        tensors,
        replaced,
        copied,
    })
}
