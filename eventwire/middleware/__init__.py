"""The settlement chain: the wrappers around a handler that turn a delivery into an :class:`Outcome`.

One fixed order, outermost first (docs/failures.md):

1. observers (metrics, tracing) see every delivery and its final outcome;
2. dead-lettering stores a ``dead_letter`` outcome in the dead-letter stream, then terms the
   original, or naks it with the retry policy's delay when the store failed: nothing is lost;
3. decoding turns the message into a :class:`~eventwire.Delivery` (bad input, oversized or
   undecodable payloads and unknown types become ``dead_letter`` or ``skip`` here);
4. the retry policy turns a handler's exception into a nak with backoff, a retry in place
   (ordered modes) or a ``dead_letter`` (permanent errors, deliveries exhausted);
5. the App's own middleware, in the order given, then the handler.

So a retry can never end up outside dead-lettering, and user middleware always sees decoded
deliveries and the handler's exceptions. The consumer only applies the outcome.
"""

from ._chain import settlement_chain
from ._decode import Step

__all__ = ["Step", "settlement_chain"]
