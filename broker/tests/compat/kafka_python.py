"""kafka-python (a pure-Python Kafka client, its own protocol code) against the broker.

Run by broker/tests/kafka_python.rs with the bootstrap address as the only argument; exits
non-zero (with a traceback) on the first thing that doesn't work.
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
admin.create_topics([NewTopic("py-topic", 4, 1)])
assert "py-topic" in admin.list_topics(), admin.list_topics()

producer = KafkaProducer(
    bootstrap_servers=bootstrap, acks="all", compression_type="gzip", enable_idempotence=True
)
for i in range(100):
    producer.send("py-topic", key=b"k%d" % (i % 7), value=b"v%d" % i)
producer.flush()

consumer = KafkaConsumer(
    "py-topic",
    bootstrap_servers=bootstrap,
    group_id="py-group",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=20000,
)
values = set()
for message in consumer:
    values.add(message.value)
    if len(values) == 100:
        break
assert values == {b"v%d" % i for i in range(100)}, len(values)
consumer.commit()
consumer.close()

groups = admin.list_groups()
assert any(g["group_id"] == "py-group" for g in groups), groups
offsets = admin.list_group_offsets("py-group")["py-group"]
assert sum(o.offset for o in offsets.values()) == 100, offsets
admin.delete_topics(["py-topic"])
assert "py-topic" not in admin.list_topics()
print("kafka-python: ok")
