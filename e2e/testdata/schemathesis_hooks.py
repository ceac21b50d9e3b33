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


# Fixed bugs leave nothing here; a new one gets a function that makes its
# inputs harmless and an entry in KNOWN_BUGS, named as in the test.
KNOWN_BUGS = {}
ACTIVE = [KNOWN_BUGS[name] for name in filter(None, os.environ.get("OPENAPI_FUZZ_KNOWN_BUGS", "").split(","))]


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("webhook_url"), str):
        body["webhook_url"] = loopback_url(body["webhook_url"])
    for fix in ACTIVE:
        fix(case)
