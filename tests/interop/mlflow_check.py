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
        assert "report.html" in names and "results.json" in names, artifacts
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
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
