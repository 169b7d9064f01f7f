#!/usr/bin/env python3
"""Runs the README's tour as a new user would and fails where its output differs from what
the README shows.

It starts the server with the README's first command (`cargo run`) on free ports and a fresh
SQLite file, makes the one change the README asks for when ports are taken (the `API=` and
`MQTT_PORT=` lines), then pastes each ```sh block of the tour section into one bash, step by
step. A step is a command (with its continuation lines) and the `# ` lines right after it,
which are what the command must print, line for line and ending in a newline; `…` in them
stands for any text. A command with no such lines must print nothing.

Usage: python3 .ci/tour.py   (from the repository root; needs curl, jq, mosquitto-clients)
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

README = "README.md"
SECTION = "## A 5-minute tour"
DONE = "__tour_step_done__"
STEP_TIMEOUT_S = 600  # a step may build something with cargo the first time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tour_blocks(text):
    """The ```sh blocks between the tour's heading and the next level-2 heading."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def split_commands(block):
    """Each command of a block with the output lines that follow it."""
    out = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        command = [line]
        # Continuation lines and the lines of an open `( … )` group belong to the command.
        depth = line.count("(") - line.count(")")
        while (command[-1].endswith("\\") or depth > 0) and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
            depth += lines[i].count("(") - lines[i].count(")")
        i += 1
        expected = []
        while i < len(lines) and lines[i].startswith("# "):
            expected.append(lines[i][2:])
            i += 1
        out.append(("\n".join(command), expected))
    return out


def matches(expected, actual):
    pattern = "^" + ".*".join(re.escape(part) for part in expected.split("…")) + "$"
    return re.match(pattern, actual) is not None


def main():
    root = os.getcwd()
    text = open(README, encoding="utf-8").read()
    blocks = tour_blocks(text)
    if not blocks:
        sys.exit(f"no ```sh blocks under {SECTION!r} in {README}")

    http_port, mqtt_port = free_port(), free_port()
    scratch = tempfile.mkdtemp(prefix="iotbind-tour-")
    database = f"sqlite://{scratch}/iotbind.db?mode=rwc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTBIND_")}
    env["IOTBIND_DATABASE_URL"] = database

    server_log = open(os.path.join(scratch, "server.log"), "w")
    server = subprocess.Popen(
        ["cargo", "run", "-q"],
        env=dict(env, IOTBIND_HTTP_ADDR=f"127.0.0.1:{http_port}",
                 IOTBIND_MQTT_LISTEN=f"127.0.0.1:{mqtt_port}"),
        stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    shell = None
    failures = 0
    try:
        deadline = time.time() + STEP_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health/live", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    server_log.flush()
                    sys.exit("the server did not start:\n"
                             + open(server_log.name, encoding="utf-8").read())
                time.sleep(0.2)

        shell = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
        )
        shell.stdin.write("exec 2>&1\n")
        checked = 0
        for block in blocks:
            for command, expected in split_commands(block):
                # The one change the README asks for when its ports are taken.
                command = re.sub(r"^API=http://127\.0\.0\.1:8080$",
                                 f"API=http://127.0.0.1:{http_port}", command, flags=re.M)
                command = re.sub(r"^MQTT_PORT=1883\b", f"MQTT_PORT={mqtt_port}", command,
                                 flags=re.M)
                shell.stdin.write(command + f"\necho {DONE}\n")
                shell.stdin.flush()
                actual = read_step(shell)
                shown = [line.rstrip() for line in actual if line.strip()]
                ok = len(shown) == len(expected) and all(
                    matches(e, a) for e, a in zip(expected, shown))
                checked += 1
                if not ok:
                    failures += 1
                    print(f"--- step {checked}: output differs\n$ {command}")
                    print("README shows:\n  " + "\n  ".join(expected or ["(nothing)"]))
                    print("it printed:\n  " + "\n  ".join(shown or ["(nothing)"]))
        print(f"tour: {checked} steps, {failures} differ from the README")
    finally:
        if shell is not None:
            shell.kill()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    sys.exit(1 if failures else 0)


def read_step(shell):
    lines = []
    deadline = time.time() + STEP_TIMEOUT_S
    while time.time() < deadline:
        line = shell.stdout.readline()
        if not line:
            break
        if line.rstrip("\n") == DONE:
            return lines
        # Output with no final newline would run into the user's next prompt.
        if line.rstrip("\n").endswith(DONE):
            lines.append(line.rstrip("\n")[: -len(DONE)] + "  <- no newline at the end")
            return lines
        lines.append(line.rstrip("\n"))
    sys.exit("a tour step did not finish:\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
