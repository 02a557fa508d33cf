"""What a server process sets up once, for all its sessions.

Not in app.py: Bokeh runs app.py afresh as a module for each session and empties that module when
the session ends, so a handler defined there (and kept by the process) found its names gone: the
first soak's log had "NameError: name 'WebSocketClosedError' is not defined" from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct

import panel.io.document
from bokeh.core.serialization import Deserializer, Serializer
from tornado.iostream import StreamClosedError
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


class _ReferencesByNeed:
    """What Bokeh's Serializer keeps as `_references` (id of a model -> its Ref) for the models the
    page already has, with each Ref made only when a message refers to that model."""

    def __init__(self, models):
        self._models = {id(model): model for model in models}
        self._added: dict = {}

    def __contains__(self, key) -> bool:
        return key in self._added or key in self._models

    def __setitem__(self, key, ref) -> None:
        self._added[key] = ref

    def get(self, key, default=None):
        if key in self._added:
            return self._added[key]
        model = self._models.get(key)
        return default if model is None else model.ref


class _ModelsByNeed:
    """What Bokeh's Deserializer keeps as `_references` (a model's id -> the model) for the models the
    page already has: found by a scan while a message asks for one or two, indexed from the third on.
    A page's answer (one a frame) names one model; indexing all ~700 took 0.1 ms per message."""

    SCANS_BEFORE_INDEX = 2

    def __init__(self, models):
        self._models, self._index, self._scans = models, None, 0
        self._added: dict = {}

    def get(self, key, default=None):
        if key in self._added:
            return self._added[key]
        if self._index is None and self._scans < self.SCANS_BEFORE_INDEX:
            self._scans += 1
            return next((model for model in self._models if model.id == key), default)
        if self._index is None:
            self._index = {model.id: model for model in self._models}
        return self._index.get(key, default)

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key, model) -> None:
        self._added[key] = model


def messages_refer_to_models_by_need() -> None:
    """Let Bokeh's message serialiser make a model's reference only when a message refers to it.

    For every message to a page (a frame is one) Bokeh's Serializer made a reference for each model
    the page has (~700): 0.43-0.55 ms a message on an idle core, 14% of the event loop's time while a
    page trains (py-spy --gil). A frame refers to a handful of them. Likewise its Deserializer, for
    each message from a page, indexed every model by id (0.1 ms; 7.9%), to find the one a page's
    answer names. Messages are encoded and decoded the same. Idempotent: app.py runs for every session.

    Example:
        >>> from bokeh.models import Div
        >>> messages_refer_to_models_by_need()
        >>> old, new = Div(), Div()
        >>> serializer = Serializer(references={old})
        >>> serializer.has_ref(old), serializer.has_ref(new), serializer.get_ref(old) == old.ref
        (True, False, True)
        >>> from bokeh.core.serialization import Deserializer
        >>> reader = Deserializer([old, new])
        >>> reader.has_ref(new), reader.decode({"id": old.id}) is old
        (True, True)
    """
    if not getattr(Serializer.__init__, "flowviz", False):
        encoding = Serializer.__init__

        def serializer(self, *, references=frozenset(), deferred: bool = True, check_circular: bool = False) -> None:
            encoding(self, deferred=deferred, check_circular=check_circular)
            if references:
                self._references = _ReferencesByNeed(references)

        serializer.flowviz, serializer.__wrapped__ = True, encoding
        Serializer.__init__ = serializer
    if not getattr(Deserializer.__init__, "flowviz", False):
        decoding = Deserializer.__init__

        def deserializer(self, references=None, *, setter=None) -> None:
            decoding(self, None, setter=setter)
            if references:
                self._references = _ModelsByNeed(references)

        deserializer.flowviz, deserializer.__wrapped__ = True, decoding
        Deserializer.__init__ = deserializer


def websocket_frame(data: bytes, binary: bool) -> bytes:
    """One unfragmented, unmasked websocket frame, as a server sends it (RFC 6455, section 5.2).

    Example:
        >>> websocket_frame(b"hi", binary=False)
        b'\\x81\\x02hi'
        >>> websocket_frame(bytes(300), binary=True)[:4]
        b'\\x82~\\x01,'
    """
    size = len(data)
    length = bytes([size]) if size < 126 else struct.pack("!BH", 126, size) if size <= 0xFFFF else struct.pack("!BQ", 127, size)
    return bytes([0x80 | (0x2 if binary else 0x1)]) + length + data


def messages_in_one_write() -> None:
    """Write each Bokeh message to its page with one socket write and one task.

    Panel writes a message (a frame is one) as 3 + 2 × (its binary buffers) websocket frames, each
    through tornado's `write_message`: a socket write each, and an asyncio task each to await it
    (~11 for a live frame). On the event loop that every session shares, each write lets go of the
    GIL and waits to get it back from the training and rendering threads. Here the same frames, in
    the same order, go out as one write, awaited by one task. A connection that compresses its
    frames (never, as `panel serve` starts Bokeh) keeps Panel's way. Idempotent.
    """
    if getattr(panel.io.document.dispatch_tornado, "flowviz", False):
        return
    frame_by_frame = panel.io.document.dispatch_tornado

    def dispatch_tornado(conn, events=None, msg=None):
        connection = getattr(conn._socket, "ws_connection", None)
        if connection is None or connection.is_closing() or getattr(connection, "_compressor", None) is not None:
            return frame_by_frame(conn, events, msg)
        if msg is None:
            if not events:
                return []
            msg = conn.protocol.create("PATCH-DOC", events)
        parts = [(msg.header_json.encode(), False), (msg.metadata_json.encode(), False), (msg.content_json.encode(), False)]
        for buffer in msg._buffers:
            parts += [(json.dumps(buffer.ref).encode(), False), (buffer.to_bytes(), True)]
        try:
            written = connection.stream.write(b"".join(websocket_frame(data, binary) for data, binary in parts))
        except StreamClosedError:
            return []  # (the page has gone)
        return [asyncio.ensure_future(_closed_as_websocket_error(written))]

    dispatch_tornado.flowviz, dispatch_tornado.__wrapped__ = True, frame_by_frame
    panel.io.document.dispatch_tornado = dispatch_tornado


async def _closed_as_websocket_error(written) -> None:
    """What tornado's `write_message` raises for a page that closed, which Panel expects."""
    try:
        await written
    except StreamClosedError:
        raise WebSocketClosedError() from None
