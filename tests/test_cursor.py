"""The S3 cursor's windows: every step a run can save next lies in one, however the step widths change."""

from shipyard.intake.cursor import LOOKAHEAD, Cursor, Window, step_windows


def covered(windows: list[Window], key: str) -> bool:
    return any(key.startswith(w.prefix) and key > w.start_after for w in windows)


def test_windows_cover_the_next_saves_across_a_digit_width() -> None:
    for newest, spacing in [(10, 10), (90, 10), (9_990, 10), (10_000, 1), (99_999, 1), (5, 5), (100_000, 10)]:
        windows = step_windows("run/checkpoint-", newest, spacing)
        assert len(windows) <= 2
        for step in range(newest, newest + LOOKAHEAD * spacing + 1, spacing):
            assert covered(windows, f"run/checkpoint-{step}/config.json"), (newest, spacing, step)


def test_windows_leave_out_most_old_steps() -> None:
    windows = step_windows("checkpoint-", 10_000, 1)
    old = [s for s in range(1, 10_000) if covered(windows, f"checkpoint-{s}/config.json")]
    assert len(old) < 20


def test_cursor_relists_undecided_checkpoints_and_markers() -> None:
    cursor = Cursor()
    cursor.learn(["checkpoint-10/config.json", "checkpoint-20/config.json", "checkpoint-30/a", "latest"])
    assert cursor.newest == {"checkpoint-": 30}
    assert cursor.spacing == {"checkpoint-": 10}
    windows = cursor.windows(decided={"checkpoint-10"})
    assert Window("checkpoint-20/") in windows  # seen, below the newest, not decided yet
    assert Window("checkpoint-10/") not in windows
    assert Window("latest") in windows
