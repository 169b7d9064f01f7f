"""Schemathesis hooks for iotbind: real credentials and real ids for the generated requests.

Random data alone would only ever see 401 (no token) and 404 (no such device), so the
interesting answers, a real device's telemetry, its commands, a command's state, would
never be checked against the spec. At the first request these hooks:

- register a fresh user through the fake WeChat flow (code → bind ticket →
  register) and use its access token for every operation;
- log the admin in (created by `.ci/schemathesis.sh` with the CLI) for the admin operation;
- send the broker hook secret (set by `.ci/schemathesis.sh`) as the bearer of the two broker
  hooks, as a broker does;
- provision a few devices with the admin token and claim them as the user, and send each a
  command, so device operations can be fed real device and command ids;
- connect the kept devices to the embedded broker as devices do (openapi/asyncapi.yaml):
  they publish telemetry and answer commands (succeeded, failed, rejected, or never, which times out), so
  telemetry pages, `latest` and final commands have real content for the schema checks.

The auth operations get live values (a fresh code, bind ticket, refresh token, the user's
password, a profile encrypted with the user's session) in part of their positive cases.
Path parameters get a real id part of the time (hypothesis picks, so the seed still
decides), and the generated id the rest of the time, which keeps the 404 paths covered.

Every check runs; `filter_failure` excuses the few answers the spec documents for requests its
schemas allow but the server must still refuse (see EXCUSED).

Configuration comes from the environment, set by `.ci/schemathesis.sh`:
`IOTBIND_ST_BASE_URL`, `IOTBIND_ST_MQTT_PORT`, `IOTBIND_ST_ADMIN_USERNAME`,
`IOTBIND_ST_ADMIN_PASSWORD`, `IOTBIND_ST_BROKER_HOOK_SECRET`.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import unicodedata

import paho.mqtt.client as mqtt
import requests
import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ.get("IOTBIND_ST_BASE_URL", "http://127.0.0.1:8080").rstrip("/")
ADMIN_USERNAME = os.environ.get("IOTBIND_ST_ADMIN_USERNAME", "")
ADMIN_PASSWORD = os.environ.get("IOTBIND_ST_ADMIN_PASSWORD", "")
MQTT_PORT = int(os.environ.get("IOTBIND_ST_MQTT_PORT", "1883"))
BROKER_HOOK_SECRET = os.environ.get("IOTBIND_ST_BROKER_HOOK_SECRET", "")

# Devices the user keeps for the whole run (read, rename, telemetry, commands) and devices
# that `DELETE /devices/{id}` may unclaim, so unclaiming cannot starve the other operations.
KEPT_DEVICES = 3
EXPENDABLE_DEVICES = 2

# A command sent with `wait=true` is answered when it is final, at the latest after its
# `timeout_ms` (up to 60 s): a command nobody answers (every fourth one, and all of those to the
# expendable devices, which stay offline) would hold its case for the whole timeout. Cap it so
# the run stays within minutes.
MAX_WAIT_TIMEOUT_MS = 300

ADMIN_OPERATIONS = {"admin_provision_devices"}
BROKER_HOOK_OPERATIONS = {"broker_hook_auth", "broker_hook_acl"}


class SetupError(RuntimeError):
    """The fixtures could not be created: the server is not the one we expect."""


def _post(path: str, body: dict, token: str | None = None, expect: int = 200) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.post(f"{BASE_URL}{path}", json=body, headers=headers, timeout=30)
    if response.status_code != expect:
        raise SetupError(
            f"POST {path}: expected {expect}, got {response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else {}


TELEMETRY_PER_DEVICE = 150


class SimulatedDevice:
    """One device on the embedded broker: publishes telemetry and answers commands.

    Answers rotate through succeeded (with a result), failed, rejected and no answer at all, so
    every final state of a command shows up in the responses that get checked.
    """

    OUTCOMES = ("succeeded", "failed", "rejected", None)

    def __init__(self, device_id: str, password: str) -> None:
        self.device_id = device_id
        self.answered = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True
        )
        self.client.username_pw_set(device_id, password)
        self.client.will_set(f"devices/{device_id}/status", "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_command
        self.connected = threading.Event()
        self.client.connect("127.0.0.1", MQTT_PORT, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout=10):
            raise SetupError(f"device {device_id} could not connect to the broker on {MQTT_PORT}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(f"devices/{self.device_id}/commands", qos=1)
        client.publish(f"devices/{self.device_id}/status", "online", qos=1, retain=True)
        self.connected.set()

    def publish_telemetry(self, count: int) -> None:
        now_ms = int(time.time() * 1000)
        for i in range(count):
            message = {"values": {"temperature": 20 + i / 10, "relay": i % 2 == 0, "mode": "eco"}}
            # Half with the device's own timestamp, half stamped on arrival.
            if i % 2 == 0:
                message["ts"] = now_ms + i
            info = self.client.publish(
                f"devices/{self.device_id}/telemetry", json.dumps(message), qos=1
            )
            info.wait_for_publish(timeout=5)

    def _on_command(self, client, userdata, message) -> None:
        try:
            command = json.loads(message.payload)
        except ValueError:
            return
        outcome = self.OUTCOMES[self.answered % len(self.OUTCOMES)]
        self.answered += 1
        if outcome is None:
            return
        result = {"id": command.get("id"), "status": outcome}
        if outcome == "succeeded":
            result["result"] = {"echo": command.get("params", {}), "ok": True}
        else:
            result["error"] = f"simulated {outcome}"
        client.publish(f"devices/{self.device_id}/commands/result", json.dumps(result), qos=1)


class Fixtures:
    """Tokens and ids made once per run, before the first generated request.

    A plain class: schemathesis loads this file without registering it as a module, which
    `dataclasses` needs.
    """

    def __init__(self) -> None:
        self.user_token = ""
        self.admin_token = ""
        # The registered user's credentials and WeChat identity, for real-data variants.
        self.username = ""
        self.password = ""
        self.openid = ""
        self.kept_device_ids: list[str] = []
        self.expendable_device_ids: list[str] = []
        self.command_ids: dict[str, str] = {}
        self.devices: list[SimulatedDevice] = []


_fixtures: Fixtures | None = None
_lock = threading.Lock()


def fixtures() -> Fixtures:
    """Creates the fixtures at the first call; every worker thread shares them."""
    global _fixtures
    with _lock:
        if _fixtures is None:
            _fixtures = _create_fixtures()
        return _fixtures


def _new_code(openid: str | None = None) -> dict:
    """What `wx.login()` gives a WeChat user: `{"code", "openid"}`; a new user without openid."""
    return _post("/dev/wechat/codes", {"openid": openid} if openid else {})


def _register_user(made: Fixtures) -> None:
    # The mini program's path: wx.login() code → bind ticket → register page.
    code = _new_code()
    ticket = _post("/api/v1/auth/wechat/login", {"code": code["code"]})
    if ticket.get("status") != "bind_required":
        raise SetupError(f"a new WeChat user should need a bind, got {ticket}")
    made.username = f"st_{secrets.token_hex(6)}"
    made.password = secrets.token_urlsafe(18)
    made.openid = code["openid"]
    session = _post(
        "/api/v1/auth/wechat/register",
        {"bind_ticket": ticket["bind_ticket"], "username": made.username, "password": made.password},
        expect=201,
    )
    made.user_token = session["access_token"]


def _admin_login() -> str:
    if not ADMIN_USERNAME or not ADMIN_PASSWORD:
        raise SetupError("IOTBIND_ST_ADMIN_USERNAME and IOTBIND_ST_ADMIN_PASSWORD must be set")
    session = _post(
        "/api/v1/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    return session["access_token"]


def _create_fixtures() -> Fixtures:
    made = Fixtures()
    _register_user(made)
    made.admin_token = _admin_login()
    provisioned = _post(
        "/api/v1/admin/devices",
        {"count": KEPT_DEVICES + EXPENDABLE_DEVICES, "model": "st-probe"},
        token=made.admin_token,
        expect=201,
    )["items"]
    claimed = []
    for label in provisioned:
        device = _post(
            "/api/v1/devices/claim",
            {"serial": label["serial"], "claim_code": label["claim_code"]},
            token=made.user_token,
            expect=201,
        )
        claimed.append(device["id"])
    made.kept_device_ids = claimed[:KEPT_DEVICES]
    made.expendable_device_ids = claimed[KEPT_DEVICES:]
    for label in provisioned[:KEPT_DEVICES]:
        made.devices.append(SimulatedDevice(label["mqtt_username"], label["mqtt_password"]))
    for device in made.devices:
        device.publish_telemetry(TELEMETRY_PER_DEVICE)
    # Telemetry is written in batches: let the batch land before the first page is read.
    time.sleep(1.5)
    for device_id in claimed:
        command = _post(
            f"/api/v1/devices/{device_id}/commands",
            {"name": "st_probe", "params": {"n": 1}, "timeout_ms": 100},
            token=made.user_token,
            expect=202,
        )
        made.command_ids[device_id] = command["id"]
    return made


# No caching by schemathesis: its cache holds one token for every operation, and the token
# depends on the operation. `fixtures()` already makes each token once.
@schemathesis.auth(refresh_interval=None)
class IotbindAuth:
    """The admin's token for admin operations, the hook secret for the broker hooks, the
    registered user's token for the rest."""

    def get(self, case, context):
        operation_id = context.operation.definition.raw.get("operationId")
        if operation_id in BROKER_HOOK_OPERATIONS:
            return BROKER_HOOK_SECRET
        made = fixtures()
        if operation_id in ADMIN_OPERATIONS:
            return made.admin_token
        return made.user_token

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _operation_id(context) -> str | None:
    operation = getattr(context, "operation", None)
    if operation is None:
        return None
    return operation.definition.raw.get("operationId")


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    """Replaces the generated device (and command) id by a real one part of the time."""
    if not isinstance(path_parameters, dict) or "device_id" not in path_parameters:
        return st.just(path_parameters)
    made = fixtures()
    pool = (
        made.expendable_device_ids
        if _operation_id(context) == "devices_unclaim"
        else made.kept_device_ids
    )
    choices = [dict(path_parameters)]
    for device_id in pool:
        real = dict(path_parameters, device_id=device_id)
        choices.append(real)
        if "command_id" in path_parameters:
            choices.append(dict(real, command_id=made.command_ids[device_id]))
    return st.sampled_from(choices)


# Real-data variants of request bodies. Generated bodies alone never hold a live code, bind
# ticket, refresh token, password or encrypted profile, so the success answers of the auth
# operations (and their response schemas) would go untested. Each variant keeps the generated
# parts that matter (a username, a new password, a nickname) and adds the one live value;
# hypothesis chooses between the variant and the generated body. A variant that cannot be
# made (say, the user is locked out) falls back to the generated body.


def _fallback(body, make):
    try:
        return make()
    except (SetupError, requests.RequestException, KeyError, ValueError):
        return body


def _bind_ticket() -> str:
    answer = _post("/api/v1/auth/wechat/login", {"code": _new_code()["code"]})
    return answer["bind_ticket"]


def _user_session() -> dict:
    """A fresh login of the fixture user through WeChat: no password, so no lockout."""
    code = _new_code(fixtures().openid)["code"]
    answer = _post("/api/v1/auth/wechat/login", {"code": code})
    if answer.get("status") != "authenticated":
        raise SetupError(f"the fixture user should log in, got {answer.get('status')}")
    return answer


def _encrypted_profile(data: dict) -> dict:
    # The server decrypts with the session key of the identity's latest login.
    _user_session()
    return _post("/dev/wechat/encrypt", {"openid": fixtures().openid, "data": data})


def _with(body, **live):
    return dict(body, **live) if isinstance(body, dict) else body


_VALID_USERNAME = st.from_regex(r"[A-Za-z0-9_.-]{3,32}", fullmatch=True)
# 8–128 characters, not all digits (a letter first); may still equal nothing we know.
_STRONG_PASSWORD = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcXYZé密"),
    st.text(min_size=7, max_size=127),
)

_PROFILE_DATA = st.fixed_dictionaries(
    {
        "nickName": st.text(max_size=40),
        "avatarUrl": st.one_of(
            st.just("https://thirdwx.qlogo.cn/mmopen/vi_32/a/132"),
            st.text(max_size=20),
            st.text(min_size=500, max_size=520).map(lambda t: "https://x.example/" + t),
        ),
        "gender": st.integers(min_value=0, max_value=2),
    },
    optional={"unionId": st.text(max_size=40)},
)


def _real_body(operation_id: str | None, body):
    """The strategy for one live-value variant of `body`, or None for other operations."""
    if not isinstance(body, dict):
        return None
    if operation_id == "auth_wechat_login":
        return st.one_of(
            st.builds(lambda: _fallback(body, lambda: {"code": _new_code()["code"]})),
            st.builds(
                lambda: _fallback(body, lambda: {"code": _new_code(fixtures().openid)["code"]})
            ),
        )
    if operation_id in ("auth_wechat_register", "auth_wechat_bind"):
        variants = [
            st.builds(lambda: _fallback(body, lambda: _with(body, bind_ticket=_bind_ticket()))),
            # A username that passes the rules, so the password rules and 201 get reached.
            _VALID_USERNAME.map(
                lambda name: _fallback(
                    body, lambda: _with(body, bind_ticket=_bind_ticket(), username=name)
                )
            ),
        ]
        if operation_id == "auth_wechat_bind":
            # An account that already has a WeChat identity: 409 account_already_bound.
            made = fixtures()
            variants.append(
                st.builds(
                    lambda: _fallback(
                        body,
                        lambda: _with(
                            body,
                            bind_ticket=_bind_ticket(),
                            username=made.username,
                            password=made.password,
                        ),
                    )
                )
            )
        return st.one_of(variants)
    if operation_id in ("auth_refresh", "auth_logout"):
        return st.builds(
            lambda: _fallback(body, lambda: {"refresh_token": _user_session()["refresh_token"]})
        )
    if operation_id == "me_change_password":
        return st.one_of(
            st.builds(lambda: _with(body, current_password=fixtures().password)),
            _STRONG_PASSWORD.map(
                lambda new: _with(body, current_password=fixtures().password, new_password=new)
            ),
        )
    if operation_id == "me_wechat_profile":
        return _PROFILE_DATA.map(lambda data: _fallback(body, lambda: _encrypted_profile(data)))
    return None


@schemathesis.hook
def flatmap_case(context, case):
    """Offers a live-value variant of a positive case's body, for the operations that need one.

    Negative cases keep their body: they must stay invalid to test the 400 answers.
    """
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return st.just(case)
    variant = _real_body(_operation_id(context), case.body)
    if variant is None:
        return st.just(case)

    def with_body(body):
        case.body = body
        return case

    return st.one_of(st.just(case), variant.map(with_body))


@schemathesis.hook
def after_call(context, case, response):
    """Follows the fixture user's password when a generated change of it succeeded."""
    if _operation_id(context) != "me_change_password" or response.status_code != 204:
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("new_password"), str):
        with _lock:
            fixtures_now = _fixtures
            if fixtures_now is not None and body.get("current_password") == fixtures_now.password:
                fixtures_now.password = body["new_password"]


@schemathesis.hook
def map_case(context, case):
    """Caps `timeout_ms` of waiting commands; see MAX_WAIT_TIMEOUT_MS."""
    if _operation_id(context) != "devices_send_command":
        return case
    body = case.body
    if isinstance(body, dict) and body.get("wait") is True:
        timeout = body.get("timeout_ms")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout > MAX_WAIT_TIMEOUT_MS:
            case.body = dict(body, timeout_ms=MAX_WAIT_TIMEOUT_MS)
    return case


# Answers to requests the schemas allow that the server must still refuse: each is documented
# in the spec, and none can be stated in JSON Schema. A failure of one of these checks is
# excused only for its operation, its status and its error code, and where `applies` says the
# request (and the answer's message) is the documented case.


def _error_body(response) -> dict:
    try:
        body = json.loads(response.content)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response) -> str | None:
    return _error_body(response).get("error")


def _blames_cursor(case, response) -> bool:
    message = _error_body(response).get("message", "")
    return isinstance(case.query, dict) and "cursor" in case.query and "`cursor`" in message


def _astral_format_character(case, field: str) -> bool:
    """Whether the body's `field` holds a format character above U+FFFF, which the refusing
    pattern cannot name (see the field's description)."""
    body = case.body
    value = body.get(field) if isinstance(body, dict) else None
    return isinstance(value, str) and any(
        ord(c) > 0xFFFF and unicodedata.category(c) == "Cf" for c in value
    )


def _password_is_username(case, password_field: str, username: str | None) -> bool:
    body = case.body
    if not isinstance(body, dict):
        return False
    password = body.get(password_field)
    name = username if username is not None else body.get("username")
    return isinstance(password, str) and isinstance(name, str) and password.lower() == name.lower()


def _always(case, response) -> bool:
    return True


class Excuse:
    """One documented refusal of schema-valid input, and why no schema can state it."""

    def __init__(self, check, operation_id, status, error, reason, applies=_always):
        self.check = check
        self.operation_id = operation_id
        self.status = status
        self.error = error
        self.reason = reason
        self.applies = applies


EXCUSED = [
    Excuse(
        "positive_data_acceptance",
        "auth_wechat_login",
        400,
        "invalid_code",
        # Whether a code is one WeChat issued only WeChat knows: any string of 1–256 characters
        # is a well-formed code, and WeChat refuses those it did not issue (or has expired).
        "WeChat does not know the code",
    ),
    Excuse(
        "positive_data_acceptance",
        "me_wechat_profile",
        400,
        "invalid_encrypted_data",
        # The ciphertext must be base64 of whole AES blocks, the IV base64 of exactly 16 bytes,
        # and the plaintext sealed with the caller's session key and our appid: none of that is
        # a property of the strings a schema can check.
        "the data is not WeChat's sealed user info for this session",
    ),
    Excuse(
        "positive_data_acceptance",
        "auth_wechat_register",
        422,
        "weak_password",
        # A password may not be the username in any case: one field compared with another is
        # beyond JSON Schema; the field's description says so.
        "the password is the username",
        lambda case, response: _password_is_username(case, "password", None),
    ),
    Excuse(
        "positive_data_acceptance",
        "me_change_password",
        422,
        "weak_password",
        # The same rule, against the account's username, which is not in the request at all.
        "the new password is the username",
        lambda case, response: _password_is_username(case, "new_password", fixtures().username),
    ),
    Excuse(
        "positive_data_acceptance",
        "auth_wechat_register",
        422,
        "invalid_nickname",
        # Format characters above U+FFFF need `\u{…}` escapes, which only a Unicode-mode
        # ECMA 262 regex reads; the pattern names the rest, the description all of them.
        "a format character above U+FFFF in the nickname",
        lambda case, response: _astral_format_character(case, "nickname"),
    ),
    Excuse(
        "positive_data_acceptance",
        "me_update",
        422,
        "invalid_nickname",
        "a format character above U+FFFF in the nickname",
        lambda case, response: _astral_format_character(case, "nickname"),
    ),
    Excuse(
        "positive_data_acceptance",
        "devices_claim",
        422,
        "invalid_device_name",
        "a format character above U+FFFF in the device name",
        lambda case, response: _astral_format_character(case, "name"),
    ),
    Excuse(
        "positive_data_acceptance",
        "devices_rename",
        422,
        "invalid_device_name",
        "a format character above U+FFFF in the device name",
        lambda case, response: _astral_format_character(case, "name"),
    ),
    Excuse(
        "positive_data_acceptance",
        "devices_telemetry",
        400,
        "invalid_request",
        # A cursor is opaque: only one the server gave out as `next_cursor` means anything.
        "a `cursor` the server did not give out",
        _blames_cursor,
    ),
]


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but those EXCUSED lists."""
    operation_id = case.operation.definition.raw.get("operationId")
    status = getattr(response, "status_code", None)
    for excuse in EXCUSED:
        if (
            excuse.check in failure.checks
            and excuse.operation_id == operation_id
            and excuse.status == status
            and excuse.error == _error_code(response)
            and excuse.applies(case, response)
        ):
            return False
    return True
