//! EnCodec's decoder against transformers: the fixture (scripts/fixtures/encodec_fixture.py)
//! holds tiny random EnCodec models of both layouts (MusicGen's 32 kHz codec: centred,
//! reflect-padded; and causal, zero-padded, legacy tensor names) and the PCM transformers
//! decodes from fixed codes; every sample must match within the stated tolerance.
// Test helpers unwrap too: a panic is the failure message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use musicrl_policy::encodec::Encodec;
use safetensors::{Dtype, SafeTensors};

/// f32 against f32 through the same operations in another order: absolute tolerance, on
/// signals whose peaks are 0.14–0.41.
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `(codes [K][T], pcm [C][samples])` per clip, in order.
fn reference(file: &Path) -> Vec<(Vec<Vec<u32>>, Vec<Vec<f32>>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut clips: BTreeMap<usize, (Vec<Vec<u32>>, Vec<Vec<f32>>)> = BTreeMap::new();
    for (key, view) in st.tensors() {
        let (kind, index) = key.split_once('.').unwrap();
        let index: usize = index.parse().unwrap();
        let [rows, cols]: [usize; 2] = view.shape().try_into().unwrap();
        let entry = clips.entry(index).or_default();
        match (kind, view.dtype()) {
            ("codes", Dtype::I64) => {
                let v: Vec<u32> = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
                    .collect();
                entry.0 = v
                    .chunks_exact(cols)
                    .take(rows)
                    .map(<[u32]>::to_vec)
                    .collect();
            }
            ("pcm", Dtype::F32) => {
                let v: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                entry.1 = v
                    .chunks_exact(cols)
                    .take(rows)
                    .map(<[f32]>::to_vec)
                    .collect();
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    clips.into_values().collect()
}

fn check(codec: &Encodec, reference_file: &Path) -> usize {
    let clips = reference(reference_file);
    assert!(!clips.is_empty());
    for (i, (codes, expected)) in clips.iter().enumerate() {
        let pcm = codec.decode(codes).unwrap();
        assert_eq!(pcm.sample_rate as usize, codec.config().sampling_rate);
        assert_eq!(pcm.channels.len(), expected.len(), "clip {i}: channels");
        for (c, (got, want)) in pcm.channels.iter().zip(expected).enumerate() {
            assert_eq!(got.len(), want.len(), "clip {i}, channel {c}: samples");
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= TOL,
                "clip {i} ({} × {} codes), channel {c}: worst sample difference {worst:e} > {TOL:e}",
                codes.len(),
                codes[0].len()
            );
        }
    }
    clips.len()
}

#[test]
fn decodes_as_transformers_does_in_musicgens_codec_layout() {
    let folder = fixtures().join("encodec/tiny-32khz");
    let codec = Encodec::load(&folder, &Device::flex()).unwrap();
    assert_eq!(codec.num_codebooks(), 4);
    assert_eq!(codec.sample_rate(), 1600);
    assert_eq!(check(&codec, &folder.join("reference.safetensors")), 6);
}

#[test]
fn decodes_the_graded_codec_of_the_audio_loop_as_transformers_does() {
    let folder = fixtures().join("encodec/tiny-graded");
    let codec = Encodec::load(&folder, &Device::flex()).unwrap();
    assert_eq!(check(&codec, &folder.join("reference.safetensors")), 6);
}

#[test]
fn decodes_as_transformers_does_with_causal_zero_padded_legacy_named_convolutions() {
    let folder = fixtures().join("encodec/tiny-causal");
    let codec = Encodec::load(&folder, &Device::flex()).unwrap();
    assert_eq!(codec.num_codebooks(), 3);
    assert_eq!(check(&codec, &folder.join("reference.safetensors")), 6);
}

#[test]
fn decodes_the_codec_inside_a_musicgen_folder() {
    let codec = Encodec::load(&fixtures().join("musicgen/tiny"), &Device::flex()).unwrap();
    assert_eq!(codec.num_codebooks(), 4);
    assert_eq!(
        check(
            &codec,
            &fixtures().join("encodec/musicgen-tiny.safetensors")
        ),
        3
    );
}

#[test]
fn the_version_names_the_weights() {
    let device = Device::flex();
    let a = Encodec::load(&fixtures().join("encodec/tiny-32khz"), &device).unwrap();
    let again = Encodec::load(&fixtures().join("encodec/tiny-32khz"), &device).unwrap();
    let b = Encodec::load(&fixtures().join("encodec/tiny-causal"), &device).unwrap();
    assert!(a.version().starts_with("encodec-") && a.version().len() == 20);
    assert_eq!(a.version(), again.version());
    assert_ne!(a.version(), b.version());
}

#[test]
fn bad_codes_are_refused_by_what_is_wrong() {
    let codec = Encodec::load(&fixtures().join("encodec/tiny-32khz"), &Device::flex()).unwrap();
    let err = |codes: Vec<Vec<u32>>| codec.decode(&codes).unwrap_err().to_string();
    assert!(err(vec![]).contains("1 to 4 codebooks"));
    assert!(err(vec![vec![0; 3]; 5]).contains("1 to 4 codebooks"));
    assert!(err(vec![vec![]]).contains("no frames"));
    assert!(err(vec![vec![0; 3], vec![0; 2]]).contains("codebook 1 has 2 frames"));
    let e = err(vec![vec![0, 64, 1]]);
    assert!(e.contains("code 64 at codebook 0, frame 1"), "{e}");
}

#[test]
fn a_folder_that_is_not_a_codec_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let e = Encodec::load(&dir.path().join("missing"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a folder"), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    let e = Encodec::load(dir.path(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither an EnCodec configuration"), "{e}");
    // A codec folder missing one tensor of the decoder names it.
    let src = fixtures().join("encodec/tiny-32khz");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "decoder.layers.1.lstm.bias_hh_l1")
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.path().join("model.safetensors")).unwrap();
    let e = Encodec::load(dir.path(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("decoder.layers.1.lstm.bias_hh_l1") && e.contains("missing"),
        "{e}"
    );
}
