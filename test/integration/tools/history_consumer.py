#!/usr/bin/env python3
"""A consumer that reads Flyt events the way fint-flyt-history-service does.

    kcat -C -J ... | history_consumer.py ORG_TOPIC_PREFIX [CONTEXT]

Reads kcat -J envelopes (one JSON object per line, any number of topics) and
applies the rules of fint-flyt-history-service (INTEROP.md section 2.4, both
the Java version 2f3c16c and the Kotlin HEAD e759630):

  - it listens on <org>.<ctx>.event.<name> for the INFO events and on
    <org>.<ctx>.event.error.<name> for the ERROR events, and on
    <org>.<ctx>.event.error.instance-error (HEAD only);
  - a record without the header flyt.instance-flow-headers, with one that is
    not JSON or lacks sourceApplicationId or correlationId (the Java class
    has @NonNull on both), or without the header origin.application.id is
    skipped: its error handler skips failed records and nothing is stored;
  - an ERROR record's value is an ErrorCollection; errors null fails the
    Java version (NPE), so it is skipped too; instance-error values are
    {"name": InstanceErrorOrigin, "errors": ErrorCollection}, stored under
    the legacy event name the origin maps to;
  - the event's timestamp is the record timestamp (CreateTime), its
    application id the origin.application.id header, its instance id the
    flow headers' instanceId.

Prints one JSON document: {"events": [...], "skipped": [...]}.  Only the
standard library: it is an independent reader, not flyt_instance code.
"""
import json
import sys

INFO = {"instance-received", "instance-registered", "instance-requested-for-retry",
        "instance-mapped", "instance-dispatched", "instance-deleted"}
ERROR = {"instance-receival-error", "instance-registration-error",
         "instance-retry-request-error", "instance-mapping-error",
         "instance-dispatching-error"}
ORIGIN_TO_NAME = {"RECEIVAL": "instance-receival-error",
                  "REGISTRATION": "instance-registration-error",
                  "RETRY_REQUEST": "instance-retry-request-error",
                  "MAPPING": "instance-mapping-error",
                  "DISPATCHING": "instance-dispatching-error"}


def last_header(headers, name):
    """ConsumerRecord.headers().lastHeader(name), as text, or None."""
    value = None
    for i in range(0, len(headers or []) - 1, 2):
        if headers[i] == name:
            value = headers[i + 1]
    return value


class Skip(Exception):
    pass


def error_collection(value):
    if not isinstance(value, dict) or not isinstance(value.get("errors"), list):
        raise Skip("ErrorCollection without errors")
    out = []
    for e in value["errors"]:
        if not isinstance(e, dict):
            raise Skip("error is not an object")
        args = e.get("args")
        if args is not None and not isinstance(args, dict):
            raise Skip("args is not a map")
        out.append({"errorCode": e.get("errorCode"), "args": args or {}})
    return out


def consume(envelope, prefix):
    topic = envelope.get("topic", "")
    if topic.startswith(prefix + "error."):
        name, kind = topic[len(prefix) + 6:], "ERROR"
        if name != "instance-error" and name not in ERROR:
            return None
    elif topic.startswith(prefix):
        name, kind = topic[len(prefix):], "INFO"
        if name not in INFO:
            return None
    else:
        return None

    headers = envelope.get("headers") or []
    flow_text = last_header(headers, "flyt.instance-flow-headers")
    if flow_text is None:
        raise Skip("no instance flow headers")
    try:
        flow = json.loads(flow_text)
    except ValueError:
        raise Skip("could not read instance flow headers")
    if not isinstance(flow, dict) or flow.get("sourceApplicationId") is None \
            or flow.get("correlationId") is None:
        raise Skip("flow headers without sourceApplicationId or correlationId")
    origin = last_header(headers, "origin.application.id")
    if origin is None:
        raise Skip("no origin.application.id")

    event = {"name": name, "type": kind, "timestamp": envelope.get("ts"),
             "timestampType": envelope.get("tstype"), "applicationId": origin,
             "instanceId": flow.get("instanceId"),
             "correlationId": flow.get("correlationId"),
             "sourceApplicationId": flow.get("sourceApplicationId"),
             "sourceApplicationInstanceId": flow.get("sourceApplicationInstanceId")}
    if kind == "ERROR":
        try:
            value = json.loads(envelope.get("payload") or "null")
        except ValueError:
            raise Skip("value is not JSON")
        if name == "instance-error":
            if not isinstance(value, dict) or value.get("name") not in ORIGIN_TO_NAME:
                raise Skip("InstanceErrorEvent without a known name")
            event["name"] = ORIGIN_TO_NAME[value["name"]]
            value = value.get("errors")
        event["errors"] = error_collection(value)
    return event


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: history_consumer.py ORG [CONTEXT]")
    org = sys.argv[1].replace(".", "-")
    ctx = sys.argv[2] if len(sys.argv) > 2 else "flyt"
    prefix = "%s.%s.event." % (org, ctx)
    events, skipped = [], []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        envelope = json.loads(line)
        try:
            event = consume(envelope, prefix)
        except Skip as e:
            skipped.append({"topic": envelope.get("topic"), "offset": envelope.get("offset"),
                            "reason": str(e)})
            continue
        if event is not None:
            events.append(event)
    json.dump({"events": events, "skipped": skipped}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
