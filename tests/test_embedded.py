"""The embedded default model's one-time conversion (upo.embedded), without converting anything."""

from __future__ import annotations

import threading
import time

from upo import embedded


def test_processes_starting_together_convert_the_embedded_model_once(tmp_path, monkeypatch):
    """Callers arriving while the conversion runs wait for it and find the folder; a second conversion
    would replace the folder under a process already reading it."""
    calls = []

    def convert(target, progress):
        calls.append(target)
        time.sleep(0.5)  # the others arrive meanwhile
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", convert)
    found = []
    threads = [threading.Thread(target=lambda: found.append(embedded.embedded_model_dir(tmp_path, progress=False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and found == [tmp_path / "models" / embedded.FOLDER_NAME] * 3
    assert embedded.embedded_model_dir(tmp_path) == found[0] and len(calls) == 1  # found without the lock too
