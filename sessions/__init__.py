"""Sessions: TinyDB persistence of engine events, one writer per session, exact resume.

    from sessions import SessionStore, start_session, resume_session
"""

from sessions.runner import resume_session, run_session, start_session
from sessions.store import SessionHandle, SessionStore, SessionSummary

__all__ = ["SessionHandle", "SessionStore", "SessionSummary", "resume_session", "run_session",
           "start_session"]
