"""Confluent's own client library against the lab: confluent-kafka's SchemaRegistryClient, its
JSON Schema serializer and deserializer, and its Kafka consumer.

    python3 confluent_registry_client.py BROKERS REGISTRY_URL TOPIC...

Reads each TOPIC from its start to its end and decodes every value as Confluent's tools do
(the magic byte, the schema id, the writer's schema fetched from the registry by that id, the
payload checked against it), then asks the registry about changes to `order.created-value`.
Prints one JSON document on stdout; lab/tests/saga/schemas.rs asserts on it. Any error raised
by Confluent's code fails the script (and the test) with its traceback.
"""

import copy
import json
import sys
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

POLL_SECONDS = 30
SUBJECT = "order.created-value"
SCRATCH = "lesson.evolution-value"


def read_to_end(brokers, topic, deserialize):
    """Every record of `topic`, from each partition's start to its end, decoded."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"confluent-client-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=POLL_SECONDS).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    open_partitions, records = set(partitions), []
    while open_partitions:
        message = consumer.poll(POLL_SECONDS)
        if message is None:
            raise SystemExit(f"{topic}: nothing within {POLL_SECONDS} s, {open_partitions} unread")
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                open_partitions.discard(message.partition())
                continue
            raise SystemExit(f"{topic}: {message.error()}")
        value = message.value()
        if value is None:  # a tombstone: nothing to decode
            continue
        records.append(
            {
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().decode(),
                "schema_id": int.from_bytes(value[1:5], "big"),
                "value": deserialize(value, SerializationContext(topic, MessageField.VALUE)),
            }
        )
    consumer.close()
    return records


def refusal(call):
    """The registry's refusal of `call`, as Confluent's client reports it, or None."""
    try:
        call()
    except SchemaRegistryError as e:
        return {"http_status": e.http_status_code, "error_code": e.error_code}
    return None


def main():
    brokers, registry_url, topics = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = SchemaRegistryClient({"url": registry_url})
    deserialize = JSONDeserializer(None, schema_registry_client=client)
    out = {
        "subjects": client.get_subjects(),
        "records": {topic: read_to_end(brokers, topic, deserialize) for topic in topics},
    }

    latest = client.get_latest_version(SUBJECT)
    out["latest"] = {"version": latest.version, "id": latest.schema_id,
                     "type": latest.schema.schema_type}

    # Confluent's serializer, told not to register: it looks the schema up under the subject
    # (POST /subjects/{s}) and frames the event with the id the registry gives.
    serialize = JSONSerializer(latest.schema.schema_str, client,
                               conf={"auto.register.schemas": False})
    event = out["records"][topics[0]][0]["value"]
    framed = serialize(event, SerializationContext(topics[0], MessageField.VALUE))
    out["serialized"] = {"magic": framed[0], "schema_id": int.from_bytes(framed[1:5], "big"),
                         "same_payload": json.loads(framed[5:]) == event}

    # Schema evolution: an optional field is a compatible change, a retyped one is not and is
    # refused before anything could be produced with it.
    doc = json.loads(latest.schema.schema_str)
    with_note, retyped = copy.deepcopy(doc), copy.deepcopy(doc)
    with_note["properties"]["note"] = {"type": "string"}
    retyped["properties"]["total"] = {"type": "string"}
    as_schema = lambda d: Schema(json.dumps(d), "JSON")  # noqa: E731
    out["compatible"] = client.test_compatibility(SUBJECT, as_schema(with_note))
    out["incompatible"] = client.test_compatibility(SUBJECT, as_schema(retyped))
    out["retyped_refused"] = refusal(lambda: client.register_schema(SUBJECT, as_schema(retyped)))
    out["with_note_id"] = client.register_schema(SUBJECT, as_schema(with_note))
    out["versions"] = client.get_versions(SUBJECT)

    # A subject's own compatibility level, set and read back.
    client.register_schema(SCRATCH, as_schema({"type": "object"}))
    client.set_compatibility(SCRATCH, "FULL")
    out["scratch_level"] = client.get_compatibility(SCRATCH)
    out["unknown_subject"] = refusal(lambda: client.get_latest_version("no.such-value"))

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
