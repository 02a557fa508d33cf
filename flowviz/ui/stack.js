// The layer stack editor: a palette of layer types and the stack, with drag and drop, buttons and
// keys. The browser never edits the stack itself: it sends an action ("add", "move", "remove",
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

  let dragged = null; // {from: "palette", type} or {from: "stack", index}
  const send = (msg) => model.send_msg(msg);

  function dropIndex(event, index) {
    const box = event.currentTarget.getBoundingClientRect();
    return event.clientY > box.top + box.height / 2 ? index + 1 : index;
  }

  function drop(event, index) {
    event.preventDefault();
    stack.classList.remove("fv-drop-target");
    const info = dragged ?? JSON.parse(event.dataTransfer.getData("text/plain") || "null");
    dragged = null;
    if (!info) return;
    if (info.from === "palette") send({ action: "add", type: info.type, index });
    else if (info.from === "stack") send({ action: "move", from: info.index, to: index });
  }

  function drawPalette() {
    palette.replaceChildren(
      ...model.palette.map((entry) => {
        const card = el("div", "fv-card fv-palette-item");
        card.draggable = true;
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
        card.addEventListener("dragstart", (e) => {
          dragged = { from: "palette", type: entry.name };
          e.dataTransfer.effectAllowed = "copy";
          e.dataTransfer.setData("text/plain", JSON.stringify(dragged));
        });
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
      row.draggable = true;
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
      row.addEventListener("click", () => send({ action: "select", index }));
      row.addEventListener("dragstart", (e) => {
        dragged = { from: "stack", index };
        e.dataTransfer.effectAllowed = "move";
        e.dataTransfer.setData("text/plain", JSON.stringify(dragged));
      });
      row.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); });
      row.addEventListener("drop", (e) => { e.stopPropagation(); drop(e, dropIndex(e, index)); });
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
    tail.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); });
    tail.addEventListener("drop", (e) => { e.stopPropagation(); drop(e, items.length); });
    const focused = root.getRootNode().activeElement;
    const focusIndex = focused && focused.dataset ? focused.dataset.index : undefined;
    stack.replaceChildren(...rows, tail);
    if (focusIndex !== undefined && model.focus !== null) stack.children[Math.min(model.focus, items.length - 1)]?.focus();
  }

  stack.addEventListener("dragover", (e) => { e.preventDefault(); stack.classList.add("fv-drop-target"); });
  stack.addEventListener("dragleave", () => stack.classList.remove("fv-drop-target"));
  stack.addEventListener("drop", (e) => drop(e, model.items.length));

  drawPalette();
  drawStack();
  model.on("palette", drawPalette);
  model.on("items", drawStack);
  model.on("selected", drawStack);
  return root;
}
