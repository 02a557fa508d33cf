// The layer stack editor: a palette of layer types and the stack, with drag and drop (pointer
// events: mouse, pen and touch), buttons and keys. The browser never edits the stack itself: it sends an action ("add", "move", "remove",
// "toggle", "select") to Python, which validates it and sends back the new `items`.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function render({ model }) {
  const root = el("div", "fv-stack-editor");
  const palette = el("div", "fv-palette");
  const stack = el("ol", "fv-stack");
  stack.setAttribute("aria-label", "Layer stack, base at the top");
  root.append(
    el("div", "fv-head", "Layers (drag in, or press +)"),
    el("div", "fv-head", "Your flow: base → … → output"),
    palette,
    stack,
  );

  const send = (msg) => model.send_msg(msg);

  // Dragging runs on pointer events, so a mouse, a pen and a finger all work: a card follows the
  // pointer and the stack shows where it will land. A press that does not move is a click.
  let drag = null; // {from: "palette", type} or {from: "stack", index}, plus the ghost and `to`, the drop index
  let justDragged = false;

  function dropIndex(x, y) {
    const box = stack.getBoundingClientRect();
    if (x < box.left || x > box.right || y < box.top || y > box.bottom) return null;
    const rows = [...stack.querySelectorAll(".fv-stack-item")];
    const at = rows.findIndex((row) => { const r = row.getBoundingClientRect(); return y <= r.top + r.height / 2; });
    return at === -1 ? rows.length : at;
  }

  function showDrop(index) {
    stack.classList.toggle("fv-drop-target", index !== null);
    [...stack.children].forEach((child, i) => child.classList.toggle("fv-drop-before", i === index));
  }

  function startDrag(event, info, card) {
    if (event.button !== 0 || event.target.closest("button, input")) return;
    drag = { ...info, card, x0: event.clientX, y0: event.clientY, ghost: null, to: null };
    // The page, not the card, follows the pointer: it may leave the card (and a touch is captured
    // by the element it started on anyway).
    window.addEventListener("pointermove", moveDrag, { passive: false });
    window.addEventListener("pointerup", endDrag);
    window.addEventListener("pointercancel", endDrag);
  }

  function moveDrag(event) {
    if (!drag) return;
    if (!drag.ghost) {
      if (Math.hypot(event.clientX - drag.x0, event.clientY - drag.y0) < 6) return;
      drag.ghost = drag.card.cloneNode(true);
      drag.ghost.classList.add("fv-ghost");
      drag.ghost.style.width = `${drag.card.getBoundingClientRect().width}px`;
      root.append(drag.ghost);
    }
    drag.ghost.style.left = `${event.clientX + 8}px`;
    drag.ghost.style.top = `${event.clientY - 14}px`;
    drag.to = dropIndex(event.clientX, event.clientY);
    showDrop(drag.to);
    event.preventDefault();
  }

  function endDrag(event) {
    window.removeEventListener("pointermove", moveDrag);
    window.removeEventListener("pointerup", endDrag);
    window.removeEventListener("pointercancel", endDrag);
    if (!drag) return;
    const { ghost, to } = drag;
    const info = drag;
    drag = null;
    if (!ghost) return; // a click
    ghost.remove();
    showDrop(null);
    justDragged = true;
    setTimeout(() => { justDragged = false; }, 0);
    if (event.type !== "pointerup" || to === null) return;
    if (info.from === "palette") send({ action: "add", type: info.type, index: to });
    else if (to !== info.index && to !== info.index + 1) send({ action: "move", from: info.index, to });
  }

  function draggable(card, info) {
    card.addEventListener("pointerdown", (e) => startDrag(e, info(), card));
  }

  function drawPalette() {
    palette.replaceChildren(
      ...model.palette.map((entry) => {
        const card = el("div", "fv-card fv-palette-item");
        card.tabIndex = 0;
        card.dataset.type = entry.name;
        card.title = `${entry.description}\n\n${entry.reference}`;
        card.setAttribute("role", "button");
        card.setAttribute("aria-label", `Add ${entry.title}`);
        const text = el("div", "fv-text");
        text.append(el("div", "fv-title", entry.title), el("div", "fv-desc", entry.description));
        const add = el("button", "fv-add", "+");
        add.title = `Add ${entry.title} at the output end`;
        add.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "add", type: entry.name }); });
        card.append(text, add);
        draggable(card, () => ({ from: "palette", type: entry.name }));
        card.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); send({ action: "add", type: entry.name }); }
        });
        return card;
      }),
    );
  }

  function drawStack() {
    const items = model.items;
    const rows = items.map((item, index) => {
      const row = el("li", "fv-card fv-stack-item");
      if (!item.enabled) row.classList.add("fv-off");
      if (item.id === model.selected) row.classList.add("fv-selected");
      row.tabIndex = 0;
      row.dataset.index = index;
      row.title = "Click to edit. Drag to reorder. Keys: Enter edit, Alt+↑/↓ move, Delete remove, Space on/off";
      const text = el("div", "fv-text");
      text.append(el("div", "fv-title", `${index + 1}. ${item.title}`), el("div", "fv-desc", item.summary));
      const toggle = el("input", "fv-toggle");
      toggle.type = "checkbox";
      toggle.checked = item.enabled;
      toggle.title = item.enabled ? "Switch this layer off (its weights are kept)" : "Switch this layer on";
      toggle.setAttribute("aria-label", `Layer ${index + 1} on`);
      toggle.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "toggle", index }); });
      const up = el("button", "fv-move", "↑");
      up.title = "Move towards the base";
      up.disabled = index === 0;
      up.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "move", from: index, to: index - 1 }); });
      const down = el("button", "fv-move", "↓");
      down.title = "Move towards the output";
      down.disabled = index === items.length - 1;
      down.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "move", from: index, to: index + 2 }); });
      const remove = el("button", "fv-remove", "×");
      remove.title = "Remove this layer";
      remove.setAttribute("aria-label", `Remove layer ${index + 1}`);
      remove.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "remove", index }); });
      row.append(toggle, text, up, down, remove);
      row.addEventListener("click", () => { if (!justDragged) send({ action: "select", index }); });
      draggable(row, () => ({ from: "stack", index }));
      row.addEventListener("keydown", (e) => {
        if (e.altKey && e.key === "ArrowUp") send({ action: "move", from: index, to: index - 1 });
        else if (e.altKey && e.key === "ArrowDown") send({ action: "move", from: index, to: index + 2 });
        else if (e.key === "ArrowUp") stack.children[Math.max(index - 1, 0)]?.focus();
        else if (e.key === "ArrowDown") stack.children[Math.min(index + 1, items.length - 1)]?.focus();
        else if (e.key === "Delete" || e.key === "Backspace") send({ action: "remove", index });
        else if (e.key === "Enter") send({ action: "select", index });
        else if (e.key === " ") send({ action: "toggle", index });
        else return;
        e.preventDefault();
      });
      return row;
    });
    const tail = el("li", "fv-drop-zone", items.length ? "drop here to add at the output end" : "Drag a layer here. With no layers, the flow is its base.");
    const focused = root.getRootNode().activeElement;
    const focusIndex = focused && focused.dataset ? focused.dataset.index : undefined;
    stack.replaceChildren(...rows, tail);
    if (focusIndex !== undefined && model.focus !== null) stack.children[Math.min(model.focus, items.length - 1)]?.focus();
  }

  drawPalette();
  drawStack();
  model.on("palette", drawPalette);
  model.on("items", drawStack);
  model.on("selected", drawStack);
  return root;
}
