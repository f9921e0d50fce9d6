"""TensorBoard reads what musicrl writes: a short `musicrl local` run with
`tracking.tensorboard` set, read back with stock TensorBoard's own event reader
(`EventAccumulator`, what `tensorboard --logdir` uses).

Usage: python tests/interop/tensorboard_check.py path/to/musicrl [STEPS]
"""

import os
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing import event_accumulator


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="musicrl-tb-")
    logdir = os.path.join(work, "tb")
    out = os.path.join(work, "run")
    subprocess.run(
        [
            binary,
            "local",
            "--steps",
            str(steps),
            "--out",
            out,
            "--set",
            f"tracking.tensorboard={logdir}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    runs = sorted(os.listdir(logdir))
    assert runs == ["run"], f"one TensorBoard run named after the output folder, got {runs}"
    acc = event_accumulator.EventAccumulator(
        os.path.join(logdir, "run"),
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.AUDIO: 0},
    )
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for want in [
        "reward_mean",
        "kl",
        "entropy",
        "loss",
        "policy_loss",
        "value_loss",
        "grad_norm",
        "policy_lag_mean",
        "samples_per_second",
        "batch_wait_seconds",
        "component_means/text",
        "component_means/form",
    ]:
        assert want in scalars, f"{want} missing from {sorted(scalars)}"
    kl = acc.Scalars("kl")
    assert [e.step for e in kl] == list(range(1, steps + 1)), [e.step for e in kl]
    # The same numbers as history.jsonl.
    import json

    with open(os.path.join(out, "history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    for event, row in zip(acc.Scalars("reward_mean"), history):
        assert event.step == row["step"]
        assert abs(event.value - row["reward_mean"]) < 1e-6, (event, row["reward_mean"])
    # The batch's best and worst clips at the last step, on the Audio tab, captions on Text.
    for tag in ["samples/best", "samples/worst"]:
        assert tag in tags["audio"], tags["audio"]
        clip = acc.Audio(tag)[-1]
        assert clip.step == steps, clip.step
        assert clip.content_type == "audio/wav" and clip.encoded_audio_string[:4] == b"RIFF"
        assert clip.sample_rate == 16000 and clip.length_frames > 16000, clip.length_frames
    captions = acc.Tensors("samples/captions")[-1].tensor_proto.string_val[0].decode()
    assert "**best**" in captions and "**worst**" in captions, captions
    # The end-of-run verdict: the panel's win rate of the final policy over θ0, its sentence,
    # and θ0's and the final policy's clips of the same held-out captions.
    with open(os.path.join(out, "summary.json")) as f:
        verdict = json.load(f)["verdict"]
    for tag in ["verdict/win_rate", "verdict/theta0_overall", "verdict/final_overall"]:
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    win = acc.Scalars("verdict/win_rate")[-1]
    assert win.step == steps and abs(win.value - verdict["win_rate"]) < 1e-6, (win, verdict)
    for tag in ["verdict/theta0/0", "verdict/final/0", "verdict/theta0/1", "verdict/final/1"]:
        assert tag in tags["audio"], tags["audio"]
        assert acc.Audio(tag)[-1].encoded_audio_string[:4] == b"RIFF"
    sentence = acc.Tensors("verdict")[-1].tensor_proto.string_val[0].decode()
    assert "simulated rater panel" in sentence, sentence
    # The configuration, on the Text tab.
    assert "configuration" in tags["tensors"], tags
    text = acc.Tensors("configuration")[0].tensor_proto.string_val[0].decode()
    assert "[learner]" in text and "tensorboard" in text, text[:200]
    print(
        f"TensorBoard {__import__('tensorboard').__version__} read {len(scalars)} scalars "
        f"over {steps} steps, {len(tags['audio'])} audio tags and the configuration from {logdir}/run"
    )


if __name__ == "__main__":
    main()
