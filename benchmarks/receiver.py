"""The partner gateway in a process of its own: ``hub.receiver.Receiver`` plus the time each
message first arrived. Driven over stdin/stdout, one command a line:

    count            -> the number of distinct messages received
    dump PATH        -> writes {"sender message-id": unix time of first arrival} as JSON to PATH
    cpu              -> CPU seconds this process has used
    quit
"""

from __future__ import annotations

import json
import sys
import time

from hub.receiver import Receiver


def main() -> None:
    arrivals: dict[str, float] = {}
    receiver = Receiver()
    receiver.on_receive = lambda sender, message_id, body: arrivals.__setitem__(f"{sender} {message_id}", time.time())
    receiver.start()
    print(receiver.port, flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "count":
            print(receiver.unique, flush=True)
        elif command == "dump":
            with open(arg, "w", encoding="utf-8") as fh:
                json.dump(dict(arrivals), fh)
            print("ok", flush=True)
        elif command == "cpu":
            print(time.process_time(), flush=True)
        elif command == "quit":
            break
    receiver.stop()


if __name__ == "__main__":
    main()
