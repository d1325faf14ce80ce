"""Rounds of bus events merged per server and framed once (gateway.rounds): pure, no I/O."""

from __future__ import annotations

import json

from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from resofleet.contracts import (
    BusEvent,
    ContainerOutputBatch,
    OutputLine,
    ScheduleRun,
    ServerState,
    Status,
    StatusUpdate,
)
from resofleet.gateway.rounds import LINE_OVERHEAD, UPDATE_WEIGHT, Sequencer, text_frame, weight


def output(server: str, first: int, count: int, epoch: str = "e1") -> BusEvent:
    lines = [OutputLine(seq=s, output=f"{server} {s}") for s in range(first, first + count)]
    body = ContainerOutputBatch(server=server, epoch=epoch, lines=lines)
    return BusEvent(server=server, kind="output", body=body)


def status(server: str) -> BusEvent:
    body = StatusUpdate(
        status=Status(status="running", name=server, id="c1", cpu_usage=1.0, memory_percent=2.0,
                      memory_used="1.0GB", memory_total="8.0GB"),
        server=server,
    )
    return BusEvent(server=server, kind="status", body=body)


def seqs(piece) -> list[int]:
    return [line.seq for line in piece.body.lines]


def test_consecutive_batches_of_a_server_become_one_batch_in_seq_order():
    """Three batches of one server and epoch are one piece holding every line, in order."""
    round_ = Sequencer().round([output("a", 1, 2), output("a", 3, 1), output("a", 4, 3)])
    assert len(round_.pieces) == 1
    assert seqs(round_.pieces[0]) == [1, 2, 3, 4, 5, 6]
    batch = json.loads(round_.pieces[0].messages(True)[0])
    assert batch["type"] == "container_output_batch" and batch["epoch"] == "e1"
    assert [line["seq"] for line in batch["lines"]] == [1, 2, 3, 4, 5, 6]


def test_servers_are_merged_apart_and_each_keeps_its_order():
    """Interleaved servers give one batch each, in the order of their first event."""
    round_ = Sequencer().round([output("a", 1, 1), output("b", 1, 2), output("a", 2, 1), output("b", 3, 1)])
    assert [(p.server, seqs(p)) for p in round_.pieces] == [("a", [1, 2]), ("b", [1, 2, 3])]


def test_an_update_keeps_its_place_among_its_servers_output():
    """Output before a status update goes before it, output after it after it."""
    round_ = Sequencer().round([output("a", 1, 2), status("a"), output("a", 3, 1)])
    kinds = [json.loads(m)["type"] for p in round_.pieces for m in p.messages(True)]
    assert kinds == ["container_output_batch", "status_update", "container_output_batch"]
    assert seqs(round_.pieces[0]) == [1, 2] and seqs(round_.pieces[2]) == [3]


def test_a_new_epoch_starts_a_new_batch_and_its_seq_over():
    """An agent restart (new epoch, seq from 1 again) is not merged into the old epoch's batch."""
    round_ = Sequencer().round([output("a", 7, 2, "e1"), output("a", 1, 2, "e2")])
    assert [(p.body.epoch, seqs(p)) for p in round_.pieces] == [("e1", [7, 8]), ("e2", [1, 2])]


def test_a_seq_forwarded_once_is_never_forwarded_again():
    """Lines repeated within a round or in a later round are dropped and counted."""
    sequencer = Sequencer()
    first = sequencer.round([output("a", 1, 3), output("a", 2, 3)])
    assert seqs(first.pieces[0]) == [1, 2, 3, 4] and first.repeated == 2
    second = sequencer.round([output("a", 3, 3)])
    assert seqs(second.pieces[0]) == [5] and second.repeated == 2
    assert sequencer.round([output("a", 1, 5)]).pieces == []


def test_line_mode_keeps_one_message_per_line_in_event_order():
    """For line clients a round is one container_output per line, servers as they came."""
    round_ = Sequencer().round([output("a", 1, 2), output("b", 1, 1), output("a", 3, 1)])
    messages = [json.loads(m) for p in round_.events for m in p.messages(False)]
    assert [(m["type"], m["server"], m["seq"]) for m in messages] == [
        ("container_output", "a", 1), ("container_output", "a", 2),
        ("container_output", "b", 1), ("container_output", "a", 3),
    ]
    assert messages[0] == {"type": "container_output", "output": "a 1", "server": "a", "seq": 1, "epoch": "e1"}


def test_state_events_go_to_the_registry_not_to_clients():
    """A state event is set apart; it makes no piece."""
    state = ServerState(server="a", state="restarting")
    round_ = Sequencer().round([BusEvent(server="a", kind="state", body=state)])
    assert round_.states == [state] and round_.pieces == [] and round_.events == []


def test_a_piece_is_encoded_once_per_form():
    """Asking twice for a form returns the very same bytes objects."""
    piece = Sequencer().round([output("a", 1, 2)]).pieces[0]
    assert piece.frames(True)[0] is piece.frames(True)[0]
    assert piece.messages(False)[1] is piece.messages(False)[1]


def test_frames_are_the_bytes_websockets_writes_without_extensions():
    """text_frame matches a server protocol's send_text, short and long (16/64-bit length)."""
    for size in (10, 200, 70_000):
        protocol = ServerProtocol(state=OPEN)
        message = ("é" * size).encode()
        protocol.send_text(message)
        assert b"".join(protocol.data_to_send()) == text_frame(message)
    for length in (0, 1, 125, 126, 127, 65_535, 65_536):  # each side of each length form
        protocol = ServerProtocol(state=OPEN)
        message = b"x" * length
        protocol.send_text(message)
        assert b"".join(protocol.data_to_send()) == text_frame(message), length


def test_weight_counts_text_plus_overhead_per_line():
    """weight bounds rounds: a line's text and overhead; updates a fixed amount; state nothing."""
    assert weight(output("a", 1, 2)) == len("a 1") + len("a 2") + 2 * LINE_OVERHEAD
    assert weight(status("a")) == UPDATE_WEIGHT
    assert weight(BusEvent(server="a", kind="state", body=ServerState(server="a", state="ready"))) == 0


def schedule_run(server: str) -> BusEvent:
    body = ScheduleRun(server=server, schedule="nightly", action="restart", slot=1.0e9, outcome="ok")
    return BusEvent(server=server, kind="schedule", body=body)


def test_a_schedule_run_is_forwarded_in_its_place_in_both_modes():
    """A schedule_run event is a piece of its own between its server's output, for batch
    and line clients alike, and viewers see it as it is (nothing in it is hidden)."""
    round_ = Sequencer().round([output("a", 1, 1), schedule_run("a"), output("a", 2, 1)])
    assert round_.unknown == []
    for pieces, batch in ((round_.pieces, True), (round_.events, False)):
        kinds = [json.loads(m)["type"] for p in pieces for m in p.messages(batch)]
        assert kinds[1] == "schedule_run" and len(kinds) == 3
    piece = round_.pieces[1]
    assert piece.viewed((False, False)) is piece
    assert json.loads(piece.messages(True)[0]) == {
        "type": "schedule_run", "server": "a", "schedule": "nightly", "action": "restart",
        "slot": 1.0e9, "outcome": "ok",
    }
