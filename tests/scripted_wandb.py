"""W&B's server, scripted: a loopback HTTP server that answers the GraphQL calls W&B's own client code makes.

Everything on our side of the wire is real: ``wandb.sweep`` and ``wandb.agent`` (W&B's agent in
``wandb/wandb_agent.py``, which spawns one process per run and stops it with SIGTERM), the wandb-core
service that performs the HTTP requests, ``wandb.init`` in each trial process. Only the server's
answers are scripted: the viewer check at login, sweep creation (``UpsertSweep``), the sweep lookup
(``SweepWithRuns``), agent registration (``CreateAgent``) and heartbeats (``Heartbeat``), whose
commands come from a test-supplied ``decide(run_state)`` function. Any other operation is an error
the test sees (``unknown``), so a new call W&B starts making cannot pass unnoticed.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

ENTITY, PROJECT, SWEEP_ID, AGENT_ID = "team", "proj", "sw3ep1d", "agent-1"

Decide = Callable[[dict[str, bool]], list[dict[str, Any]]]


class ScriptedWandbServer:
    """``url`` for ``WANDB_BASE_URL``; ``decide(run_state)`` returns each heartbeat's commands."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.sweep_configs: list[dict[str, Any]] = []  # what UpsertSweep received, parsed
        self.heartbeats: list[dict[str, bool]] = []  # each heartbeat's runState
        self.sent: list[dict[str, Any]] = []  # every command sent
        self.operations: list[str] = []
        self.unknown: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/graphql":  # wandb-core's own telemetry (OpenTelemetry metrics): accept
                    return self._reply(200, {})
                request = json.loads(body)
                query = request.get("query", "")
                named = re.search(r"\b(?:query|mutation)\s+(\w+)", query)  # W&B does not always send operationName
                op = request.get("operationName") or (named.group(1) if named else "")
                with server.lock:
                    data = server.answer(op, query, request.get("variables") or {})
                self._reply(200, {"data": data} if data is not None else
                            {"errors": [{"message": "not scripted"}]})

            def _reply(self, status: int, payload: dict) -> None:
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def answer(self, op: str, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
        self.operations.append(op)
        project = {"id": "p1", "name": PROJECT, "entity": {"id": "e1", "name": ENTITY}}
        if op == "Viewer":
            return {"viewer": {"id": "u1", "entity": ENTITY, "username": "tester", "email": None, "flags": "{}",
                               "teams": {"edges": []}}}
        if op == "UpsertSweep":
            self.sweep_configs.append(yaml.safe_load(variables["config"]))
            return {"upsertSweep": {"sweep": {"name": SWEEP_ID, "project": project}, "configValidationWarnings": []}}
        if op == "SweepWithRuns":
            config = yaml.safe_dump(self.sweep_configs[-1]) if self.sweep_configs else None
            return {"project": {"sweep": {"id": "s1", "name": SWEEP_ID, "method": "random", "state": "RUNNING",
                                          "description": None, "config": config, "createdAt": None,
                                          "heartbeatAt": None, "updatedAt": None, "earlyStopJobRunning": False,
                                          "bestLoss": None, "controller": None, "scheduler": None,
                                          "runs": {"edges": []}}}}
        if op == "CreateAgent":
            return {"createAgent": {"agent": {"id": AGENT_ID}}}
        if op == "Heartbeat":
            state = json.loads(variables.get("runState") or "{}")
            self.heartbeats.append(state)
            commands = self.decide(state)
            self.sent.extend(commands)
            return {"agentHeartbeat": {"agent": {"id": AGENT_ID}, "commands": json.dumps(commands)}}
        self.unknown.append(op or query[:80])
        return None

    def __enter__(self) -> ScriptedWandbServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()


def run_command(run_id: str, values: dict[str, Any], program: str | None = None) -> dict[str, Any]:
    """A heartbeat's ``run`` command, as W&B's controller sends it (``args`` = ``{name: {"value": v}}``)."""
    return {"type": "run", "run_id": run_id, "program": program, "args": {k: {"value": v} for k, v in values.items()}}


def stop_command(run_id: str) -> dict[str, Any]:
    return {"type": "stop", "run_id": run_id}


EXIT = {"type": "exit"}
