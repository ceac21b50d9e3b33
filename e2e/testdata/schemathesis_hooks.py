"""Schemathesis hooks of e2e TestInternalAPIMatchesOpenAPI.

1. Nothing leaves the machine. The only outbound traffic the internal API can
   cause is webhook delivery (the test homeserver has federation off, NATS is
   off), so every http(s) `webhook_url` Schemathesis generates is pointed at the
   test's loopback receiver ($OPENAPI_FUZZ_WEBHOOK_HOST, host:port) before it
   is sent. Only the host is replaced: the scheme, credentials, path, query and
   fragment stay as generated, so the bridge's URL checks still see them.
   Anything that is not an http(s) URL is left alone (the bridge refuses it).

2. Known bugs ($OPENAPI_FUZZ_KNOWN_BUGS, comma-separated names from the test's
   fuzzKnownBugs, each a TODO there): the inputs that trigger one are made
   harmless before they are sent, so the rest of the operation is still fuzzed.
   When a bug is fixed, its entry in the test and its function here go.
"""

import os
import re

import schemathesis

RECEIVER = os.environ["OPENAPI_FUZZ_WEBHOOK_HOST"]


def loopback_url(value):
    lower = value.lower()
    for scheme in ("http://", "https://"):
        if lower.startswith(scheme):
            rest = value[len(scheme):]
            end = len(rest)
            for sep in "/?#":
                i = rest.find(sep)
                if i != -1:
                    end = min(end, i)
            authority, tail = rest[:end], rest[end:]
            userinfo = authority.rpartition("@")[0]
            return value[: len(scheme)] + (userinfo + "@" if userinfo else "") + RECEIVER + tail
    return value


MAX_SAFE_INTEGER = 2**53 - 1
USER_ID = re.compile(r"@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(:[0-9]+)?\Z")


def canonical(value):
    """The value with what the homeserver cannot sign replaced: numbers that are
    not integers in [-(2^53-1), 2^53-1] (and -0) become 0, and object keys lose
    the characters JSON must escape (U+0000-U+001F, '"' and backslash)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else 0
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else 0
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {"".join(c for c in k if ord(c) >= 0x20 and c not in '"\\'): canonical(v) for k, v in value.items()}
    return value


def create_room_canonical_json(case):
    """POST /internal/matrix/create-room passes event content the homeserver
    cannot sign on (Dendrite answers 500, so the bridge 502)."""
    body = case.body
    if case.method.upper() != "POST" or case.path != "/internal/matrix/create-room" or not isinstance(body, dict):
        return
    for key in ("creation_content", "power_level_content_override"):
        if isinstance(body.get(key), dict):
            body[key] = canonical(body[key])
    if isinstance(body.get("initial_state"), list):
        for state in body["initial_state"]:
            if isinstance(state, dict) and isinstance(state.get("content"), dict):
                state["content"] = canonical(state["content"])


def create_room_power_levels(case):
    """POST /internal/matrix/create-room takes a power_level_content_override
    that leaves the bridge bot ($OPENAPI_FUZZ_BOT) too little power to send the
    room's own initial state, or whose `users` has a key that is not a user id
    (the homeserver answers 403, so the bridge 502): here the bot keeps its
    100, no level asks for more, and `users` keeps only user ids."""
    body = case.body
    if case.method.upper() != "POST" or case.path != "/internal/matrix/create-room" or not isinstance(body, dict):
        return
    levels = body.get("power_level_content_override")
    if not isinstance(levels, dict):
        return
    for key, value in list(levels.items()):
        if isinstance(value, int) and not isinstance(value, bool):
            levels[key] = min(value, 100)
    if isinstance(levels.get("events"), dict):
        levels["events"] = {k: min(v, 100) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in levels["events"].items()}
    if isinstance(levels.get("users"), dict):
        levels["users"] = {k: v for k, v in levels["users"].items() if USER_ID.match(k) and k != os.environ["OPENAPI_FUZZ_BOT"]}


def create_room_nul_type(case):
    """POST /internal/matrix/create-room passes an initial_state type with a
    NUL to the homeserver, which makes the event; the bridge then answers the
    transaction carrying it 400, and the homeserver resends it for ever."""
    body = case.body
    if case.method.upper() != "POST" or case.path != "/internal/matrix/create-room" or not isinstance(body, dict):
        return
    if isinstance(body.get("initial_state"), list):
        for state in body["initial_state"]:
            if isinstance(state, dict) and isinstance(state.get("type"), str):
                state["type"] = state["type"].replace("\0", "") or "x"


KNOWN_BUGS = {
    "create-room-canonical-json": create_room_canonical_json,
    "create-room-power-levels": create_room_power_levels,
    "create-room-nul-type": create_room_nul_type,
}
ACTIVE = [KNOWN_BUGS[name] for name in filter(None, os.environ.get("OPENAPI_FUZZ_KNOWN_BUGS", "").split(","))]


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("webhook_url"), str):
        body["webhook_url"] = loopback_url(body["webhook_url"])
    for fix in ACTIVE:
        fix(case)
