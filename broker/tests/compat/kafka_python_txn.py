"""kafka-python against the broker's transactions, its admin APIs and a compacted topic: its own
protocol code, so a second, independent check of what the rdkafka tests show.

Run by broker/tests/kafka_python.rs with the bootstrap address as the only argument; exits
non-zero (with a traceback) on the first thing that doesn't work.
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import KafkaError

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
admin.create_topics([NewTopic("py-txn", 1, 1), NewTopic("py-grow", 1, 1)])

# Transactions: a committed one is read by read_committed, an aborted one only by
# read_uncommitted.
producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="py-tx")
producer.init_transactions()
producer.begin_transaction()
producer.send("py-txn", b"committed")
producer.commit_transaction()
producer.begin_transaction()
producer.send("py-txn", b"aborted")
producer.flush()
producer.abort_transaction()
producer.begin_transaction()
producer.send("py-txn", b"later")
producer.commit_transaction()


def read(isolation, want):
    consumer = KafkaConsumer(
        "py-txn",
        bootstrap_servers=bootstrap,
        group_id="py-reader-" + isolation,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        consumer_timeout_ms=5000,
    )
    values = [m.value for m in consumer]
    consumer.close()
    assert values == want, (isolation, values)


read("read_committed", [b"committed", b"later"])
read("read_uncommitted", [b"committed", b"aborted", b"later"])

listed = [t for listings in admin.list_transactions().values() for t in listings]
assert [t.transactional_id for t in listed] == ["py-tx"], listed
described = admin.describe_transactions(["py-tx"])["py-tx"]
assert "COMMIT" in str(described.state).upper(), described

# CreatePartitions, DeleteRecords, DescribeCluster, configs, groups.
admin.create_partitions({"py-grow": NewPartitions(3)})
partitions = admin.describe_topics(["py-grow"])[0]["partitions"]
assert len(partitions) == 3, partitions

grower = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(5):
    grower.send("py-grow", b"r%d" % i, partition=0)
grower.flush()
admin.delete_records({TopicPartition("py-grow", 0): 3})
consumer = KafkaConsumer(bootstrap_servers=bootstrap)
tp = TopicPartition("py-grow", 0)
assert consumer.beginning_offsets([tp])[tp] == 3
consumer.close()

cluster = admin.describe_cluster()
assert len(cluster["brokers"]) == 1, cluster

admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py-grow", configs={"retention.ms": "3600000"})])
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-grow")])
assert "3600000" in str(configs), configs

# A compacted topic through the admin API: its configs stored and described; a record without a
# key refused (INVALID_RECORD), one with a key taken.
admin.create_topics([
    NewTopic("py-table", 1, 1, topic_configs={
        "cleanup.policy": "compact",
        "delete.retention.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
    })
])
def table_configs():
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-table")])
    return {k: v["value"] for k, v in described["topic"]["py-table"].items()}
configs = table_configs()
for key, value in [("cleanup.policy", "compact"), ("delete.retention.ms", "100"),
                   ("min.cleanable.dirty.ratio", "0.01"), ("min.compaction.lag.ms", "0")]:
    assert configs.get(key) == value, (key, configs)
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py-table",
                                    configs={"cleanup.policy": "compact,delete"})])
assert table_configs()["cleanup.policy"] == "compact,delete"
table = KafkaProducer(bootstrap_servers=bootstrap, retries=0)
table.send("py-table", key=b"sku-1", value=b"12.50").get(timeout=10)
try:
    table.send("py-table", value=b"no key").get(timeout=10)
    raise AssertionError("a record without a key was taken by a compacted topic")
except KafkaError as e:
    assert "InvalidRecord" in type(e).__name__ or "INVALID_RECORD" in str(e).upper(), repr(e)
table.close()

group = KafkaConsumer(
    "py-grow",
    bootstrap_servers=bootstrap,
    group_id="py-done",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=5000,
)
assert len(list(group)) == 2
group.commit()
group.close()
admin.delete_group_offsets("py-done", [TopicPartition("py-grow", 0)])
offsets = admin.list_group_offsets("py-done")["py-done"]
assert TopicPartition("py-grow", 0) not in offsets, offsets
admin.delete_groups(["py-done"])
assert not any(g["group_id"] == "py-done" for g in admin.list_groups())
print("kafka-python transactions and admin: ok")
