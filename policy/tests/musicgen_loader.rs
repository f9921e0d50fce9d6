//! The MusicGen loader refuses every folder it cannot load faithfully, naming the file and
//! tensor: a missing, mis-shaped or unused tensor, a `pytorch_model.bin`-only folder, no
//! tokenizer, an unsupported configuration.
// Test helpers unwrap too: a panic is the failure message (`allow-unwrap-in-tests` covers
// only `#[test]` functions).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use musicrl_policy::musicgen::MusicGen;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musicgen/tiny")
}

/// A copy of the tiny fixture whose weights `edit` rewrites (name, shape, data).
fn folder_with(edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    MusicGen::load(dir, &Device::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn the_unedited_copy_loads() {
    let dir = folder_with(|_| {});
    MusicGen::load(dir.path(), &Device::default()).unwrap();
}

#[test]
fn a_missing_tensor_is_named() {
    let name = "decoder.model.decoder.layers.1.encoder_attn.k_proj.weight";
    let dir = folder_with(|t| t.retain(|(n, _, _)| n != name));
    let err = load_err(dir.path());
    assert!(err.contains(name) && err.contains("missing"), "{err}");
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() {
    let name = "text_encoder.encoder.block.0.layer.1.DenseReluDense.wi.weight";
    let dir = folder_with(|t| {
        let entry = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
        entry.1 = vec![entry.1[1], entry.1[0]]; // transposed: same size, wrong shape
    });
    let err = load_err(dir.path());
    assert!(
        err.contains(name) && err.contains("[16, 32]") && err.contains("[32, 16]"),
        "{err}"
    );
}

#[test]
fn an_unused_tensor_is_named() {
    let dir = folder_with(|t| t.push(("decoder.lm_heads.4.weight".into(), vec![2], vec![0; 8])));
    let err = load_err(dir.path());
    assert!(
        err.contains("decoder.lm_heads.4.weight") && err.contains("does not use"),
        "{err}"
    );
}

#[test]
fn a_pytorch_bin_only_folder_is_refused_with_the_conversion_command() {
    let dir = folder_with(|_| {});
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("save_pretrained"),
        "{err}"
    );
}

#[test]
fn a_folder_without_a_tokenizer_says_how_to_make_one() {
    let dir = folder_with(|_| {});
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("tokenizer.json") && err.contains("AutoTokenizer"),
        "{err}"
    );
}

#[test]
fn stereo_and_unknown_feed_forwards_are_refused_by_field() {
    for (from, to, field) in [
        (
            "\"audio_channels\": 1",
            "\"audio_channels\": 2",
            "decoder.audio_channels",
        ),
        (
            "\"feed_forward_proj\": \"relu\"",
            "\"feed_forward_proj\": \"tanh\"",
            "text_encoder.feed_forward_proj",
        ),
    ] {
        let dir = folder_with(|_| {});
        let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(config.contains(from), "fixture config has {from}");
        std::fs::write(dir.path().join("config.json"), config.replace(from, to)).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_sharded_folder_loads_like_a_single_file() {
    // Split the tiny model into two shards with an index, as large checkpoints are saved.
    let dir = folder_with(|_| {});
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let views: Vec<(String, TensorView<'_>)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(file)).unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(file.into()));
        }
    }
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let sharded = MusicGen::load(dir.path(), &Device::default()).unwrap();
    let single = MusicGen::load(&fixture(), &Device::default()).unwrap();
    let codes = vec![vec![1, 2, 3]; 4];
    assert_eq!(
        sharded.score("sad waltz", &codes).unwrap(),
        single.score("sad waltz", &codes).unwrap()
    );
}
