"""What a server process sets up once, for all its sessions.

Not in app.py: Bokeh runs app.py afresh as a module for each session and empties that module when
the session ends, so a handler defined there (and kept by the process) found its names gone: the
first soak's log had "NameError: name 'WebSocketClosedError' is not defined" from it.
"""

from __future__ import annotations

import logging

from tornado.websocket import WebSocketClosedError


def closed_page_writes_are_not_errors(loop) -> None:
    """Log, as one debug line, a write to a page that closed while a frame was on its way to it.

    Panel writes a frame's parts as separate futures; when a page closes mid-frame (a class closing
    its tabs at once), futures its destroyed session never awaits end in WebSocketClosedError, and
    asyncio logs each as "Task exception was never retrieved" with two tracebacks. That is a page
    leaving, not a fault; every other unretrieved exception still goes to the default handler.

    Example:
        >>> import asyncio, logging
        >>> from tornado.websocket import WebSocketClosedError
        >>> loop = asyncio.new_event_loop(); closed_page_writes_are_not_errors(loop)
        >>> loop.call_exception_handler({"message": "Task exception was never retrieved",
        ...                              "exception": WebSocketClosedError()})  # nothing at ERROR level
        >>> loop.close()
    """
    if getattr(loop.get_exception_handler(), "flowviz", False):
        return

    def handler(loop, context) -> None:
        if isinstance(context.get("exception"), WebSocketClosedError):
            logging.getLogger(__name__).debug("a page closed while a message was on its way to it")
        else:
            loop.default_exception_handler(context)

    handler.flowviz = True
    loop.set_exception_handler(handler)
