"""Client mods of the privacy features.

What an institution does to its backbone update before it leaves (docs/privacy.md). Both act only on
train messages that ask for them; a plain run's messages pass through untouched.

`dp_clip_mod`: with a `clipping` record (differential privacy) the reply's backbone becomes
received + clip(returned - received, C): the update, all backbone tensors together, has L2
norm at most C. The projection and the BN statistics are not in it (they never leave).

`secure_aggregation_mod`: Flower's `secaggplus_mod` for messages of the SecAgg+ protocol (the
server's `server.secure` sends them). At its "collect masked vectors" stage the mod calls the
train function; this module turns the reply into the input of the secure sum: the update
(re-clipped to C under DP), pre-scaled by the institution's weight w in (0, 1] from the
`secure-aggregation` record, as a legacy FitRes with weight 1 (so SecAgg+ sums the
pre-scaled updates and the server divides by the known total of the weights). With adaptive
clipping the within-C bit joins the masked vector (scaled by c) instead of travelling in the
clear. secaggplus_mod then quantises, masks and sends it, and empties the reply's arrays.

torch and the wire format are imported where a mod acts, not with the module: the ClientApp
module must load without torch (`clients.client_app`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from fed_uml.federated import protocol
from fed_uml.federated.protocol import ClipInstruction, SecureInstruction
from fed_uml.privacy import clip_update

__all__ = ["dp_clip_mod", "secure_aggregation_mod", "update_of"]


def update_of(received, returned) -> tuple[list[str], dict[str, np.ndarray]]:
    """(floating-point keys in the order received, returned - received in float64)."""
    keys = [k for k, v in received.items() if v.is_floating_point()]
    return keys, {k: returned[k].double().numpy() - received[k].double().numpy() for k in keys}


def _is_train(msg: Message) -> bool:
    return msg.metadata.message_type == protocol.TRAIN


def dp_clip_mod(msg: Message, context: Context, call_next) -> Message:
    """Clip the reply's backbone update to the instructed L2 norm (differential privacy)."""
    reply = call_next(msg, context)
    if not _is_train(msg) or protocol.CLIPPING not in msg.content or reply.has_error() \
            or protocol.ARRAYS not in reply.content:
        return reply
    import torch

    from fed_uml.federated.transfer import from_wire, to_wire

    clip = ClipInstruction.from_content(msg.content)
    received = from_wire(msg.content[protocol.ARRAYS])
    returned = from_wire(reply.content[protocol.ARRAYS])
    keys, update = update_of(received, returned)
    clipped, within = clip_update(update, clip.clipping_norm)
    out = dict(returned)
    for k in keys:
        out[k] = (received[k].double() + torch.from_numpy(clipped[k])).to(torch.float32)
    reply.content[protocol.ARRAYS] = to_wire(out, "float32")
    if clip.adaptive:
        reply.content[protocol.METRICS][protocol.DP_UNCLIPPED] = float(within)
    return reply


def masked_input(msg: Message, reply: Message) -> Message:
    """The train reply as SecAgg+'s input: the pre-scaled update as a FitRes of weight 1."""
    if reply.has_error():
        return reply
    from fed_uml.federated.transfer import from_wire

    secure = SecureInstruction.from_content(msg.content)
    received = from_wire(msg.content[protocol.ARRAYS])
    keys, update = update_of(received, from_wire(reply.content[protocol.ARRAYS]))
    metrics = dict(reply.content[protocol.METRICS])
    within = metrics.pop(protocol.DP_UNCLIPPED, None)
    if protocol.CLIPPING in msg.content:
        clip = ClipInstruction.from_content(msg.content)
        # exact bound after float32 rounding; whether it was within C is dp_clip_mod's finding
        # (the update here is already clipped)
        update, _ = clip_update(update, clip.clipping_norm)
    c = secure.clipping_range
    vectors = [secure.weight * update[k] for k in keys]
    metrics[protocol.SECURE_RANGE_EXCEEDED] = int(sum(np.count_nonzero(np.abs(v) > c) for v in vectors))
    if protocol.CLIPPING in msg.content and ClipInstruction.from_content(msg.content).adaptive:
        vectors.append(np.array([c * float(bool(within))]))
    fitres = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(vectors), num_examples=1,
                    metrics=metrics)
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """Send a train reply's update into the SecAgg+ masked sum when the message asks for it."""
    if not _is_train(msg) or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, lambda m, ctx: masked_input(m, call_next(m, ctx)))
