//! Reading a model's `model.safetensors` by tensor name, as the reference implementation
//! names them: every tensor is taken once, with its shape checked, and whatever is left
//! untaken at the end (outside the prefixes another component owns) is an error that
//! names it. F32, F16 and BF16 files load; the model runs in f32.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::Dtype;

use crate::PolicyError;

struct Entry {
    /// Which of the files holds it.
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// A model's safetensors file (or the shards of one), indexed by name, with a record of
/// which tensors were taken.
pub struct WeightFile {
    /// What errors name: the file, or the shards' index file.
    file: PathBuf,
    shards: Vec<(PathBuf, Vec<u8>)>,
    index: HashMap<String, Entry>,
    taken: RefCell<BTreeSet<String>>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("file", &self.file)
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl WeightFile {
    /// Reads and indexes one safetensors file.
    pub fn open(file: &Path) -> Result<Self, PolicyError> {
        Self::open_shards(file, &[file.to_path_buf()])
    }

    /// Reads and indexes the shards of one model; `name` (the index file) names them in
    /// errors about a tensor that is missing. A tensor in two shards is an error.
    pub fn open_shards(name: &Path, files: &[PathBuf]) -> Result<Self, PolicyError> {
        Self::open_under(name, files, "")
    }

    /// Reads only the tensors whose names start with `prefix` from the shards `files` (each
    /// file's header, then those tensors' bytes), so that a component sharing a large file
    /// with others (the codec inside a MusicGen folder: a few MB of a 2.4 GB file) reads
    /// only its own. `name` names the weights in errors.
    pub fn open_under(name: &Path, files: &[PathBuf], prefix: &str) -> Result<Self, PolicyError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            let io = |error| PolicyError::Io {
                path: file.clone(),
                error,
            };
            let bad = |why: String| PolicyError::Safetensors {
                file: file.clone(),
                why,
            };
            let mut f = std::fs::File::open(file).map_err(io)?;
            let size = f.metadata().map_err(io)?.len();
            let mut len = [0u8; 8];
            f.read_exact(&mut len).map_err(io)?;
            let n = u64::from_le_bytes(len);
            if n > 100 << 20 || 8 + n > size {
                return Err(bad(format!("a header of {n} bytes in a file of {size}")));
            }
            let mut header = vec![0u8; n as usize];
            f.read_exact(&mut header).map_err(io)?;
            let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| bad(format!("unreadable header: {e}")))?;
            #[derive(serde::Deserialize)]
            struct Info {
                dtype: Dtype,
                shape: Vec<usize>,
                data_offsets: (u64, u64),
            }
            let mut wanted = Vec::new();
            for (tensor, info) in &header {
                if tensor == "__metadata__" || !tensor.starts_with(prefix) {
                    continue;
                }
                let info: Info = serde_json::from_value(info.clone())
                    .map_err(|e| bad(format!("tensor {tensor}: {e}")))?;
                let (start, end) = info.data_offsets;
                let expected =
                    (info.shape.iter().product::<usize>() * info.dtype.bitsize()).div_ceil(8);
                if end < start || 8 + n + end > size || (end - start) as usize != expected {
                    return Err(bad(format!(
                        "tensor {tensor}: bytes {start}..{end} are not a {:?} tensor of shape \
                         {:?} inside the file",
                        info.dtype, info.shape
                    )));
                }
                wanted.push((tensor, info));
            }
            // In file order: one forward pass over the file.
            wanted.sort_unstable_by_key(|(_, info)| info.data_offsets.0);
            let mut bytes = Vec::new();
            for (tensor, info) in wanted {
                let (start, end) = info.data_offsets;
                f.seek(SeekFrom::Start(8 + n + start)).map_err(io)?;
                let at = bytes.len();
                bytes.resize(at + (end - start) as usize, 0);
                f.read_exact(&mut bytes[at..]).map_err(io)?;
                let entry = Entry {
                    file: i,
                    dtype: info.dtype,
                    shape: info.shape,
                    bytes: at..bytes.len(),
                };
                if index.insert(tensor.clone(), entry).is_some() {
                    return Err(bad(format!("tensor {tensor} is also in another shard")));
                }
            }
            shards.push((file.clone(), bytes));
        }
        Ok(Self {
            file: name.to_path_buf(),
            shards,
            index,
            taken: RefCell::new(BTreeSet::new()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Whether the file holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` as f32 values, checked to have shape `expected`.
    pub fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, PolicyError> {
        let entry = self
            .index
            .get(name)
            .ok_or_else(|| PolicyError::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
            })?;
        let (file, bytes) = &self.shards[entry.file];
        if entry.shape != expected {
            return Err(PolicyError::TensorShape {
                file: file.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let raw = &bytes[entry.bytes.clone()];
        let values = match entry.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(PolicyError::TensorDtype {
                    file: file.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        self.taken.borrow_mut().insert(name.to_string());
        Ok(values)
    }

    /// The tensor `name` of shape `expected` on `device`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, PolicyError> {
        let values = self.values(name, &expected)?;
        Ok(Tensor::from_data(TensorData::new(values, expected), device))
    }

    /// A PyTorch `nn.Linear` stored as `{prefix}.weight` `[d_out, d_in]` (and
    /// `{prefix}.bias` when `bias`), as a burn [`Linear`] (whose weight is `[d_in, d_out]`).
    pub fn linear(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear, PolicyError> {
        // Transposed here, in memory, so the products read a contiguous [d_in, d_out]
        // matrix (a transposed view made every product re-layout the whole weight).
        let stored = self.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let mut values = vec![0f32; stored.len()];
        for (o, row) in stored.chunks_exact(d_in.max(1)).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                values[i * d_out + o] = w;
            }
        }
        let weight = Tensor::from_data(TensorData::new(values, [d_in, d_out]), device);
        let bias = if bias {
            Some(Param::from_tensor(self.tensor(
                &format!("{prefix}.bias"),
                [d_out],
                device,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
        })
    }

    /// A PyTorch `nn.LayerNorm` (`{prefix}.weight`, `{prefix}.bias`).
    pub fn layer_norm(
        &self,
        prefix: &str,
        d: usize,
        epsilon: f64,
        device: &Device,
    ) -> Result<LayerNorm, PolicyError> {
        let mut norm = LayerNormConfig::new(d).with_epsilon(epsilon).init(device);
        norm.gamma = Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d], device)?);
        norm.beta = Some(Param::from_tensor(self.tensor(
            &format!("{prefix}.bias"),
            [d],
            device,
        )?));
        Ok(norm)
    }

    /// A PyTorch `nn.Embedding` (`{name}` `[rows, d]`).
    pub fn embedding(
        &self,
        name: &str,
        rows: usize,
        d: usize,
        device: &Device,
    ) -> Result<Embedding, PolicyError> {
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(name, [rows, d], device)?),
        })
    }

    /// Refuses tensors nobody took, except those under `ignored` prefixes (components
    /// another part of the system loads, such as the codec's `audio_encoder.`).
    pub fn finish(&self, ignored: &[&str]) -> Result<(), PolicyError> {
        self.finish_within("", ignored)
    }

    /// [`finish`](Self::finish) for the tensors under `scope` only: a component that shares
    /// its file with others (the codec inside a MusicGen folder) answers for its own.
    pub fn finish_within(&self, scope: &str, ignored: &[&str]) -> Result<(), PolicyError> {
        let taken = self.taken.borrow();
        let mut extra: Vec<&str> = self
            .index
            .keys()
            .filter(|name| name.starts_with(scope))
            .filter(|name| !taken.contains(*name))
            .filter(|name| !ignored.iter().any(|p| name.starts_with(p)))
            .map(String::as_str)
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort_unstable();
        let count = extra.len();
        let mut names = extra.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        if count > 8 {
            names.push_str(&format!(", … ({} more)", count - 8));
        }
        Err(PolicyError::UnexpectedTensors {
            file: self.file.clone(),
            count,
            names,
        })
    }
}
