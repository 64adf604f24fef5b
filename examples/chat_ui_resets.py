"""How a chat UI handles a dropped stream: clear on Reset, then show the retry.

Runs offline: a replay server serves a recorded stream whose first attempt is cut after a
few words (a TCP reset), and the second attempt completes.
"""

from __future__ import annotations

from pathlib import Path

from tally_client import Client, Reset, TextDelta
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDING = Path(__file__).parent.parent / "tests" / "recordings" / "openai_chat" / "text.sse"


class Screen:
    """Stands in for a chat bubble: text appended, cleared on reset."""

    def __init__(self) -> None:
        self.text = ""

    def append(self, piece: str) -> None:
        self.text += piece
        print(f"screen: {self.text!r}")

    def clear(self, discarded: str, attempt: int) -> None:
        print(f"-- connection dropped; clearing {discarded!r}, attempt {attempt} starts --")
        self.text = ""


def main() -> None:
    good = Reply.from_file(RECORDING)
    dropped = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    with ReplayServer() as server:
        url = server.add(Scenario(dropped, good))
        screen = Screen()
        with Client(base_url=url + "/v1") as client, client.stream("hi") as stream:
            for event in stream:
                if isinstance(event, Reset):
                    screen.clear(event.discarded_text, event.attempt)
                elif isinstance(event, TextDelta):
                    screen.append(event.text)
        response = stream.final()
    print(f"final: {response.text!r} ({response.state}, {len(response.attempts)} attempts)")


if __name__ == "__main__":
    main()
