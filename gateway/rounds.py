"""Rounds: the bus events the fan-out takes at once, merged per server and framed. Pure.

The fan-out does not forward bus events one at a time: it takes everything its
subscription has ready (up to a byte budget, :func:`weight`) as one *round*, and
:class:`Sequencer` turns the round into *pieces*, in order:

- consecutive output batches of one server in one epoch become one batch, their lines in
  ``seq`` order; a line whose ``seq`` was already forwarded in that epoch is dropped, so a
  client never sees a ``seq`` twice, whatever the bus delivers;
- ``status``, ``worlds`` and ``bans`` updates, and ``schedule_run`` (a configured schedule
  ran on the server; every client watching the server gets it, viewers too), stay pieces
  of their own, in their place in their server's order (output printed before an update
  is sent before it, output after it after it); between servers, merged pieces keep the
  order of their first event;
- ``state`` events are set apart for the registry; they are never sent to clients.

Line mode needs no merging (every line is a message of its own either way), so a round
also keeps its pieces unmerged, in the order the events came, for those clients: they see
exactly the stream they saw before rounds existed.

A :class:`Piece` is encoded once per form (one ``container_output`` message per line for
clients in line mode, one ``container_output_batch`` for batch clients), and each message
is framed once, as the unmasked, uncompressed WebSocket text frame a server sends, so the
same bytes go to every plain connection as they are.

Why merge: an agent publishes a batch every few milliseconds per server, so under steady
chatter a bus event carries a line or two; forwarded one by one, a thousand clients need a
WebSocket frame per client per event. Merged per round, the frames per client follow the
rounds, not the events, and when the gateway falls behind rounds grow and frames get
fewer: throughput adjusts itself.

No sockets, no clock: the fan-out does the I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from websockets.frames import Opcode

from resofleet.contracts import (
    BansUpdate,
    BusEvent,
    ContainerOutputBatch,
    OutputLine,
    ScheduleRun,
    ServerState,
    StatusUpdate,
    WorldsUpdate,
    encode_server,
)

from .routing import FULL_VIEW, View, output_lines, viewed_as

__all__ = ["LINE_OVERHEAD", "UPDATE_WEIGHT", "Piece", "Round", "Sequencer", "text_frame", "weight"]

#: Bytes a console line costs beyond its text, in a batch or in a message of its own (the
#: JSON around it): used only to bound a round's size, so an estimate is enough.
LINE_OVERHEAD: Final = 80
#: Bytes a status, worlds or bans update is counted for when bounding a round: a worlds
#: update with many users is a few KiB, a status update a few hundred bytes.
UPDATE_WEIGHT: Final = 2048

Update = StatusUpdate | WorldsUpdate | BansUpdate | ScheduleRun


#: The header of an unmasked final text frame (FIN + opcode 1) by payload length (RFC 6455
#: 5.2): 7-bit, 16-bit or 64-bit length.
_SHORT: Final = struct.Struct("!BB")
_MEDIUM: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")
_FIN_TEXT: Final = 0x80 | Opcode.TEXT.value


def text_frame(message: bytes) -> bytes:
    """``message`` (UTF-8) as the bytes of one server-to-client text frame, without
    extensions: what ``protocol.send_text`` would write to a connection that negotiated no
    compression. Packed here (a header and the payload) rather than through a websockets
    ``Frame``: the same bytes for a few times less CPU, and a round frames every line."""
    n = len(message)
    if n < 126:
        return _SHORT.pack(_FIN_TEXT, n) + message
    if n < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, n) + message
    return _LONG.pack(_FIN_TEXT, 127, n) + message


def weight(event: BusEvent) -> int:
    """About how many bytes ``event`` adds to a client's stream (see :data:`LINE_OVERHEAD`)."""
    body = event.body
    if isinstance(body, ContainerOutputBatch):
        return sum(len(line.output) for line in body.lines) + LINE_OVERHEAD * len(body.lines)
    if isinstance(body, ServerState):
        return 0
    return UPDATE_WEIGHT


@dataclass(slots=True)
class Piece:
    """One server's output lines (merged) or one update, encoded lazily once per form."""

    server: str
    body: ContainerOutputBatch | Update
    _messages: dict[bool, list[bytes]] = field(default_factory=dict)
    _frames: dict[bool, list[bytes]] = field(default_factory=dict)
    _views: dict[View, Piece] = field(default_factory=dict)

    def messages(self, batch: bool) -> list[bytes]:
        """The JSON messages for a client in batch mode (``True``) or line mode."""
        messages = self._messages.get(batch)
        if messages is None:
            body = self.body
            if not isinstance(body, ContainerOutputBatch):
                messages = [encode_server(body)]
            elif batch:
                messages = [encode_server(body)]
            else:
                messages = [encode_server(message) for message in output_lines(body)]
            self._messages[batch] = messages
        return messages

    def viewed(self, view: View) -> Piece:
        """This piece as clients with ``view`` may see it: itself, or a copy with the
        hidden fields emptied, made (and encoded) once per view."""
        if view == FULL_VIEW or isinstance(self.body, ContainerOutputBatch):
            return self
        piece = self._views.get(view)
        if piece is None:
            body = viewed_as(self.body, view)
            piece = self._views[view] = self if body is self.body else Piece(self.server, body)
        return piece

    def frames(self, batch: bool) -> list[bytes]:
        """:meth:`messages` framed with :func:`text_frame`."""
        frames = self._frames.get(batch)
        if frames is None:
            frames = self._frames[batch] = [text_frame(m) for m in self.messages(batch)]
        return frames


@dataclass(slots=True)
class Round:
    """A round's pieces in order, and the state events for the registry."""

    #: Output merged per server: for clients in batch mode.
    pieces: list[Piece]
    #: One piece per event, in the order they came: for clients in line mode.
    events: list[Piece]
    states: list[ServerState]
    #: Output lines dropped because their ``seq`` had been forwarded already.
    repeated: int = 0
    #: Events of a kind the fan-out does not forward (logged by the caller).
    unknown: list[BusEvent] = field(default_factory=list)

    @property
    def servers(self) -> set[str]:
        return {piece.server for piece in self.pieces}


class Sequencer:
    """Turns rounds of events into pieces; remembers, per server, the epoch and the last
    ``seq`` forwarded, so that no line goes out twice (see the module docstring)."""

    def __init__(self) -> None:
        #: server -> (epoch, last seq forwarded in it)
        self.last: dict[str, tuple[str, int]] = {}

    def round(self, events: Iterable[BusEvent]) -> Round:
        pieces: list[Piece] = []
        unmerged: list[Piece] = []
        states: list[ServerState] = []
        repeated = 0
        unknown: list[BusEvent] = []
        # server -> the piece its next output lines may join: its last piece, when that
        # is output of the same epoch (an update in between closes it)
        open_output: dict[str, Piece] = {}
        for event in events:
            body = event.body
            server = event.server
            if isinstance(body, ContainerOutputBatch):
                epoch, last = self.last.get(server, (body.epoch, -1))
                if epoch != body.epoch:
                    last = -1  # the agent restarted: seq starts over
                fresh: list[OutputLine] = []
                for line in body.lines:
                    if line.seq > last:
                        fresh.append(line)
                        last = line.seq
                    else:
                        repeated += 1
                if not fresh:
                    continue
                self.last[server] = (body.epoch, last)
                unmerged.append(
                    Piece(server, ContainerOutputBatch(server=server, epoch=body.epoch, lines=fresh))
                )
                piece = open_output.get(server)
                if piece is not None and isinstance(piece.body, ContainerOutputBatch) \
                        and piece.body.epoch == body.epoch:
                    piece.body.lines.extend(fresh)
                else:
                    merged = ContainerOutputBatch(server=server, epoch=body.epoch, lines=list(fresh))
                    piece = Piece(server, merged)
                    pieces.append(piece)
                    open_output[server] = piece
            elif isinstance(body, (StatusUpdate, WorldsUpdate, BansUpdate, ScheduleRun)):
                piece = Piece(server, body)
                pieces.append(piece)
                unmerged.append(piece)
                open_output.pop(server, None)
            elif isinstance(body, ServerState):
                states.append(body)
            else:
                unknown.append(event)
        return Round(pieces, unmerged, states, repeated, unknown)
