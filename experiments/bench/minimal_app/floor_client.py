"""Each institution returns the arrays it was sent plus one: no torch, no data, no model."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply to a train message with every array plus one: the least work a client can do."""
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    reply = RecordDict({"arrays": ArrayRecord([a + 1 for a in arrays]),
                        "metrics": MetricRecord({"num-examples": 1})})
    return Message(reply, reply_to=msg)
