"""What the Dagster UI's Automation tab shows for this code location, read through the webserver's GraphQL API (the
API the UI itself calls): every sensor and schedule with its status, and the assets with an automation condition.

    .venv/bin/python bench/automation_ui.py            # SEMID_AUTOMATION=on: as a deployment starts them

Starts `dagster-webserver` on a free port with a scratch DAGSTER_HOME, queries it, stops it. Prints a table; exits 1
if a sensor, the schedule or a condition is missing.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERY = """{
  repositoriesOrError { ... on RepositoryConnection { nodes {
    name
    sensors { name sensorType minIntervalSeconds sensorState { status } }
    schedules { name cronSchedule executionTimezone scheduleState { status } }
  } } }
  assetNodes { assetKey { path } automationCondition { label } }
}"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": QUERY}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def main() -> int:
    port = _port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, "SEMID_AUTOMATION": os.environ.get("SEMID_AUTOMATION", "on")}
        web = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
                                "-p", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while True:
                try:
                    data = query(port)["data"]
                    if data["repositoriesOrError"].get("nodes"):
                        break
                except OSError:
                    pass
                if time.time() > deadline or web.poll() is not None:
                    print("the webserver did not answer", file=sys.stderr)
                    return 1
                time.sleep(1)
        finally:
            web.terminate()
            web.wait(timeout=30)
    repo = data["repositoriesOrError"]["nodes"][0]
    print(f"Automation tab of code location {repo['name']} (SEMID_AUTOMATION={env['SEMID_AUTOMATION']})")
    print("\n| kind | name | when | status |\n|---|---|---|---|")
    for s in repo["sensors"]:
        print(f"| sensor ({s['sensorType'].lower()}) | {s['name']} | every {s['minIntervalSeconds']} s | "
              f"{s['sensorState']['status']} |")
    for s in repo["schedules"]:
        print(f"| schedule | {s['name']} | `{s['cronSchedule']}` {s['executionTimezone']} | "
              f"{s['scheduleState']['status']} |")
    conditions = {"/".join(a["assetKey"]["path"]): a["automationCondition"]["label"]
                  for a in data["assetNodes"] if a["automationCondition"]}
    print("\n| asset | automation condition |\n|---|---|")
    for key, label in sorted(conditions.items()):
        print(f"| {key} | {label} |")
    names = {s["name"] for s in repo["sensors"]}
    ok = ("follow_upstream" in names and any(n.startswith("raw_files__") for n in names)
          and any(s["name"] == "retokenize_schedule" for s in repo["schedules"])
          and "code_table/pca_kmeans" in conditions)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
