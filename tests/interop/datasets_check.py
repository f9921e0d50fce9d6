"""Hugging Face `datasets` loads what `musicrl preferences export --format hf` writes:
simulated listeners' choices imported into a SQLite preference database, exported as a
dataset folder (one Parquet file carrying datasets' feature description), and loaded with
`datasets.load_dataset(FOLDER)` — TRL's prompt/chosen/rejected columns, the clips as Audio
columns (read here as WAV bytes: decoding needs the audio backend the installed datasets
uses, torchcodec or soundfile), and musicrl's provenance columns.

Usage: python tests/interop/datasets_check.py path/to/musicrl
"""

import io
import json
import os
import subprocess
import sys
import tempfile
import wave

import datasets


def run(binary: str, *args: str) -> None:
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="musicrl-ds-")
    store = os.path.join(work, "store.jsonl")
    db = "sqlite:" + os.path.join(work, "prefs.db")
    folder = os.path.join(work, "dataset")
    run(binary, "preferences", "simulate", "--pairs", "24", "--store", store, "--seed", "3")
    run(binary, "preferences", "import", store, "--db", db)
    run(binary, "preferences", "export", folder, "--format", "hf", "--db", db)

    ds = datasets.load_dataset(folder, split="train", cache_dir=os.path.join(work, "hf-cache"))
    n_votes = 24  # every simulated choice is decisive
    assert len(ds) == n_votes, (len(ds), n_votes)
    for column in [
        "prompt",
        "chosen",
        "rejected",
        "chosen_audio",
        "rejected_audio",
        "chosen_tokens",
        "rejected_tokens",
        "channel",
        "rater",
        "created_at_ms",
    ]:
        assert column in ds.column_names, f"{column} missing from {ds.column_names}"
    for column in ["chosen_audio", "rejected_audio"]:
        feature = ds.features[column]
        assert isinstance(feature, datasets.Audio), f"{column} is {feature!r}, not Audio"
    assert all(c == "import" for c in ds["channel"]), set(ds["channel"])

    # Rows read without decoding (decoding needs the audio backend of the installed
    # datasets: torchcodec, or soundfile before datasets 4).
    raw = ds.cast_column("chosen_audio", datasets.Audio(decode=False)).cast_column(
        "rejected_audio", datasets.Audio(decode=False)
    )
    assert raw[0]["chosen"].startswith("X:"), raw[0]["chosen"][:40]
    assert raw[0]["chosen_tokens"] and all(0 <= t < 64 for t in raw[0]["chosen_tokens"])
    for row in raw.select(range(min(4, len(raw)))):
        for column in ["chosen_audio", "rejected_audio"]:
            audio = row[column]
            data = audio["bytes"] if audio.get("bytes") else open(audio["path"], "rb").read()
            with wave.open(io.BytesIO(data)) as w:
                assert w.getnchannels() == 1 and w.getsampwidth() == 2, column
                assert w.getframerate() == 22050, w.getframerate()
                assert w.getnframes() > 22050 // 2, f"{column}: {w.getnframes()} frames"
    # The folder imports back into a fresh database, every vote.
    out = subprocess.run(
        [binary, "preferences", "import", folder, "--db", "sqlite:" + os.path.join(work, "back.db")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out)
    assert report["inserted"] == n_votes, report
    print(
        f"datasets {datasets.__version__} loaded {len(ds)} votes with "
        f"{ds.features['chosen_audio']!r} columns"
    )


if __name__ == "__main__":
    main()
