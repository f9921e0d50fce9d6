"""A real MLflow tracking server receives a musicrl run: `mlflow server` on loopback, a short
`musicrl local` with `tracking.mlflow` set, then everything read back through MLflow's own
REST API (the run, its status, parameters, per-step metrics equal to history.jsonl, and the
history.jsonl artifact).

Usage: python tests/interop/mlflow_check.py path/to/musicrl [STEPS]
(the `mlflow` package must be installed in this Python)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, query: dict | None = None, body: dict | None = None):
    url = f"{base}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="musicrl-mlflow-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination",
            f"{work}/artifacts",
            "--workers",
            "1",
        ],
        stdout=open(os.path.join(work, "server.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise SystemExit(f"mlflow server did not start: {open(work + '/server.log').read()}")
        out = os.path.join(work, "run")
        subprocess.run(
            [binary, "local", "--steps", str(steps), "--out", out, "--set", f"tracking.mlflow={base}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        experiment = call(base, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "musicrl"})
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = call(base, "/api/2.0/mlflow/runs/search", body={"experiment_ids": [experiment_id]})["runs"]
        assert len(runs) == 1, runs
        info, data = runs[0]["info"], runs[0]["data"]
        assert info["run_name"] == "run", info
        assert info["status"] == "FINISHED", info
        params = {p["key"]: p["value"] for p in data["params"]}
        assert params.get("learner.steps") == str(steps), sorted(params)[:20]
        assert "learner.kl_coef" in params and "reward.components.0.kind" in params, sorted(params)[:40]
        with open(os.path.join(out, "history.jsonl")) as f:
            history = [json.loads(line) for line in f]
        for key in ["kl", "reward_mean", "component_means/text", "samples_per_second"]:
            got = call(
                base,
                "/api/2.0/mlflow/metrics/get-history",
                {"run_id": info["run_id"], "metric_key": key},
            )["metrics"]
            assert sorted(m["step"] for m in got) == list(range(1, steps + 1)), (key, got)
        kl = call(base, "/api/2.0/mlflow/metrics/get-history", {"run_id": info["run_id"], "metric_key": "kl"})["metrics"]
        for m in kl:
            row = history[m["step"] - 1]
            assert abs(m["value"] - row["kl"]) < 1e-5, (m, row["kl"])
        artifacts = call(base, "/api/2.0/mlflow/artifacts/list", {"run_id": info["run_id"]})
        names = [a["path"] for a in artifacts.get("files", [])]
        assert "history.jsonl" in names, artifacts
        # The end-of-run verdict and the report that shows it.
        assert "report.html" in names and "verdict" in names and "audio" in names, artifacts
        audio = call(base, "/api/2.0/mlflow/artifacts/list", {"run_id": info["run_id"], "path": "audio"})
        clips = [a["path"] for a in audio.get("files", [])]
        assert any(c.endswith(".wav") for c in clips), clips
        with open(os.path.join(out, "report.html")) as f:
            page = f.read()
        assert all(f'src="{c}"' in page for c in clips if c.endswith(".wav")), (clips, "the report links its clips")
        with open(os.path.join(out, "summary.json")) as f:
            verdict = json.load(f)["verdict"]
        got = call(base, "/api/2.0/mlflow/metrics/get-history",
                   {"run_id": info["run_id"], "metric_key": "verdict/win_rate"})["metrics"]
        assert len(got) == 1 and got[0]["step"] == steps, got
        assert abs(got[0]["value"] - verdict["win_rate"]) < 1e-5, (got, verdict)
        print(
            f"MLflow server at {base} holds run {info['run_id']} ({info['status']}): "
            f"{len(params)} parameters, {len(data['metrics'])} metrics over {steps} steps, artifacts {names}"
        )

        # An experiment: one MLflow run per recipe and seed, each with its held-out curve
        # (the rater panel's expected score of every evaluated checkpoint) at its steps.
        exp_out = os.path.join(work, "experiment")
        subprocess.run(
            [binary, "experiment", "--quick", "--out", exp_out,
             "--set", f"tracking.mlflow={base}", "--set", "tracking.mlflow_experiment=musicrl-experiment"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        experiment = call(base, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "musicrl-experiment"})
        runs = call(base, "/api/2.0/mlflow/runs/search",
                    body={"experiment_ids": [experiment["experiment"]["experiment_id"]]})["runs"]
        with open(os.path.join(exp_out, "results.json")) as f:
            results = json.load(f)
        by_name = {r["info"]["run_name"]: r["info"]["run_id"] for r in runs}
        assert len(by_name) == len(results["runs"]), (sorted(by_name), len(results["runs"]))
        for record in results["runs"]:
            name = os.path.basename(record["dir"])
            assert name in by_name, (name, sorted(by_name))
            got = call(base, "/api/2.0/mlflow/metrics/get-history",
                       {"run_id": by_name[name], "metric_key": "held_out/judge_overall"})["metrics"]
            want = {p["step"]: p["judge_overall"] for p in record["curve"]}
            have = {m["step"]: m["value"] for m in got}
            assert set(have) == set(want), (name, have, want)
            assert all(abs(have[k] - want[k]) < 1e-4 for k in want), (name, have, want)
        print(f"MLflow holds the experiment's {len(by_name)} runs, each with its held-out curve")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
