from headwater import HeadwaterError
from headwater.errors import DataDirLockedError, RecordTooLargeError, UnknownTopicError


def test_every_error_derives_from_the_root() -> None:
    assert issubclass(UnknownTopicError, HeadwaterError)
    assert issubclass(DataDirLockedError, HeadwaterError)


def test_messages_name_the_problem() -> None:
    assert "'orders'" in str(UnknownTopicError("orders"))
    msg = str(RecordTooLargeError(2000, 1000, "t"))
    assert "2000" in msg
    assert "1000" in msg
    lock = str(DataDirLockedError("/d", 4242))
    assert "4242" in lock
    assert "server" in lock
