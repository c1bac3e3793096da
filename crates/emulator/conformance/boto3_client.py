"""Conformance of the emulator with boto3 (default settings, one attempt).

Usage: python boto3_client.py ENDPOINT CASES_JSON

Runs every case of CASES_JSON against the emulator at ENDPOINT (its admin
API resets it and installs each case's faults and quotas first) and checks
what boto3 surfaces: the exception class, HTTP status, error code, message,
modelled members and request id, or the answer's fields and events. Prints
one line per failed case and a summary; exits 1 when a case failed.
"""

import base64
import json
import re
import sys
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def admin(endpoint, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        endpoint + "/_emulator" + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def dig(obj, dotted):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def invoke_body(case):
    body = dict(case["body"])
    if "image_bytes" in case:
        data = base64.b64encode(b"\x89PNG" + b"\0" * (case["image_bytes"] - 4)).decode()
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
        body["messages"] = [{"role": "user", "content": [image, {"type": "text", "text": body["messages"][0]["content"]}]}]
    raw = json.dumps(body)
    if "pad_to" in case:
        body["pad"] = ""
        short = len(json.dumps(body))
        body["pad"] = "x" * (case["pad_to"] - short)
        raw = json.dumps(body)
        assert len(raw) == case["pad_to"], len(raw)
    return raw.encode()


def call(client, case):
    """Runs the case's call; returns (kind, data) with kind ok or events."""
    op, model = case["op"], case["model"]
    inference = {"maxTokens": case["maxTokens"]} if "maxTokens" in case else None
    if op in ("converse", "converse_stream"):
        kwargs = {"modelId": model, "messages": case["messages"]}
        if inference:
            kwargs["inferenceConfig"] = inference
        if op == "converse":
            return client.converse(**kwargs), None
        out = client.converse_stream(**kwargs)
        events = []
        try:
            for ev in out["stream"]:
                events.append(ev)
        except botocore.exceptions.EventStreamError as e:
            return out, (events, e)
        except (botocore.exceptions.HTTPClientError, botocore.exceptions.ResponseStreamingError, urllib3.exceptions.HTTPError) as e:
            # botocore lets urllib3's error out of an event stream cut short.
            raise botocore.exceptions.ResponseStreamingError(error=e) from e
        return out, (events, None)
    if op == "count_tokens":
        if "body" in case:
            return client.count_tokens(modelId=model, input={"invokeModel": {"body": invoke_body(case)}}), None
        return client.count_tokens(modelId=model, input={"converse": {"messages": case["messages"]}}), None
    body = invoke_body(case)
    if op == "invoke":
        return client.invoke_model(modelId=model, body=body, contentType="application/json"), None
    out = client.invoke_model_with_response_stream(modelId=model, body=body, contentType="application/json")
    events = []
    try:
        for ev in out["body"]:
            events.append(ev)
    except botocore.exceptions.EventStreamError as e:
        return out, (events, e)
    except (botocore.exceptions.HTTPClientError, botocore.exceptions.ResponseStreamingError, urllib3.exceptions.HTTPError) as e:
        raise botocore.exceptions.ResponseStreamingError(error=e) from e
    return out, (events, None)


def check_error(exp, e, client, problems, ids):
    meta = e.response.get("ResponseMetadata", {})
    err = e.response.get("Error", {})
    if type(e).__name__ != exp["name"]:
        problems.append(f"class {type(e).__name__} != {exp['name']}")
    modelled = getattr(client.exceptions, exp["name"], None)
    if modelled is None or not isinstance(e, modelled):
        problems.append(f"not an instance of client.exceptions.{exp['name']}")
    if err.get("Code") != exp["name"]:
        problems.append(f"code {err.get('Code')!r} != {exp['name']!r}")
    if "status" in exp and meta.get("HTTPStatusCode") != exp["status"]:
        problems.append(f"status {meta.get('HTTPStatusCode')} != {exp['status']}")
    if err.get("Message") != exp["message"]:
        problems.append(f"message {err.get('Message')!r} != {exp['message']!r}")
    for k, v in exp.get("fields", {}).items():
        if e.response.get(k) != v:
            problems.append(f"member {k} {e.response.get(k)!r} != {v!r}")
    rid = meta.get("RequestId", "")
    if not UUID.match(rid or ""):
        problems.append(f"request id {rid!r} is not a UUID")
    ids.append(rid)


def run_case(endpoint, client, case, ids):
    admin(endpoint, "POST", "/reset")
    if "quotas" in case:
        admin(endpoint, "PUT", "/quotas", case["quotas"])
    if "faults" in case:
        admin(endpoint, "PUT", "/faults", case["faults"])
    exp = case["expect"]
    problems = []
    for _ in range(case.get("repeat", 1) - 1):
        call(client, case)
    try:
        out, stream = call(client, case)
    except (
        botocore.exceptions.ConnectionError,
        botocore.exceptions.HTTPClientError,
        botocore.exceptions.ResponseStreamingError,
    ) as e:
        # A cut connection or body: a transport error, never an answer.
        if exp.get("transport_error"):
            return []
        return [f"unexpected transport error {type(e).__name__}: {e}"]
    except botocore.exceptions.ClientError as e:
        if "error" not in exp:
            return [f"unexpected {type(e).__name__}: {e.response.get('Error')}"]
        check_error(exp["error"], e, client, problems, ids)
        return problems
    if "error" in exp:
        return [f"no error; expected {exp['error']['name']}"]
    if exp.get("transport_error"):
        events, e = stream if stream else ([], None)
        if e is not None:
            return [f"a service error {e} where the stream was cut"]
        return ["an answer where the transport was cut"]
    rid = out["ResponseMetadata"].get("RequestId", "")
    if not UUID.match(rid):
        problems.append(f"request id {rid!r} is not a UUID")
    ids.append(rid)
    if "stream_error" in exp:
        se = exp["stream_error"]
        events, e = stream
        if e is None:
            return [f"stream ended without {se['name']}"]
        if len(events) != se["events_before"]:
            problems.append(f"{len(events)} events before the exception, expected {se['events_before']}")
        err = e.response.get("Error", {})
        # botocore keeps the event's :exception-type (lower camel case).
        if err.get("Code", "").lower() != se["name"].lower():
            problems.append(f"stream exception code {err.get('Code')!r} != {se['name']!r}")
        if err.get("Message") != se["message"]:
            problems.append(f"stream exception message {err.get('Message')!r} != {se['message']!r}")
        return problems
    ok = exp["ok"]
    op = case["op"]
    if op == "converse":
        got = {"stopReason": out["stopReason"], "inputTokens": out["usage"]["inputTokens"], "outputTokens": out["usage"]["outputTokens"]}
    elif op == "count_tokens":
        got = {"inputTokens": out["inputTokens"]}
    elif op == "converse_stream":
        events, e = stream
        if e is not None:
            return [f"stream error {e}"]
        names = [next(iter(ev)) for ev in events]
        got = {"events": names}
        for ev in events:
            if "messageStop" in ev:
                got["stopReason"] = ev["messageStop"]["stopReason"]
            if "metadata" in ev:
                got["inputTokens"] = ev["metadata"]["usage"]["inputTokens"]
                got["outputTokens"] = ev["metadata"]["usage"]["outputTokens"]
    elif op == "invoke":
        body = json.loads(out["body"].read())
        got = {"body": {k: dig(body, k) for k in ok["body"]}}
    else:
        events, e = stream
        if e is not None:
            return [f"stream error {e}"]
        got = {"chunks": [json.loads(ev["chunk"]["bytes"])["type"] for ev in events]}
    for k, v in ok.items():
        if got.get(k) != v:
            problems.append(f"{k}: {got.get(k)!r} != {v!r}")
    return problems


def main():
    endpoint, path = sys.argv[1], sys.argv[2]
    cases = json.load(open(path))["cases"]
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    failed = 0
    ids = []
    for case in cases:
        try:
            problems = run_case(endpoint, client, case, ids)
        except Exception as e:  # a client-side failure is a failed case
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            failed += 1
            print(f"FAIL boto3: {case['name']}: " + "; ".join(problems))
    if len(set(ids)) != len(ids):
        failed += 1
        print("FAIL boto3: request ids repeat")
    print(f"boto3 {boto3.__version__} / botocore {botocore.__version__}: {len(cases) - failed} of {len(cases)} cases pass")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
