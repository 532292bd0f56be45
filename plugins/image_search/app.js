// Image search page: plain DOM, no build step. Every string that comes from the index (labels,
// titles, keys) is written with textContent or as a property, never parsed as HTML. Images come
// from the app's own authenticated route (api/images/<id>/content), never from S3 directly.
// ?image=<document id> opens that image's detail view (links in alerts and reports).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const labelInput = $("label");
  const suggestionList = $("suggestions");
  const slider = $("min-confidence");
  const sliderValue = $("min-confidence-value");
  const excludeModerated = $("exclude-moderated");
  const statusLine = $("status");
  const results = $("results");
  const facetList = $("facets");
  const facetTitle = $("facets-title");
  const moreButton = $("more");
  const dialog = $("detail");

  let searchSeq = 0;
  let suggestSeq = 0;
  let nextAfter = null;
  let typingTimer = null;
  let activeSuggestion = -1;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function percent(value) {
    return value === null || value === undefined ? "" : `${Number(value).toFixed(1)}%`;
  }

  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : "";
    } catch (error) {
      return "";
    }
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJson(path, params) {
    const query = new URLSearchParams(params || {});
    const response = await fetch(`${path}${query.toString() ? `?${query}` : ""}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        if (body && typeof body.detail === "string") detail = body.detail;
      } catch (error) {
        // not JSON: keep the status text
      }
      throw new HttpError(response.status, detail);
    }
    return response.json();
  }

  function showError(error) {
    statusLine.classList.add("error");
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      statusLine.textContent = "You are not signed in (or not allowed here): reload the page to sign in.";
    } else {
      statusLine.textContent = `Search failed: ${error.message}`;
    }
  }

  // --- suggestions -----------------------------------------------------------------------------

  function hideSuggestions() {
    suggestionList.hidden = true;
    suggestionList.replaceChildren();
    activeSuggestion = -1;
    labelInput.removeAttribute("aria-activedescendant");
  }

  function highlightSuggestion(index) {
    const items = suggestionList.querySelectorAll("li");
    items.forEach((item, i) => item.setAttribute("aria-selected", i === index ? "true" : "false"));
    activeSuggestion = index;
    if (items[index]) labelInput.setAttribute("aria-activedescendant", items[index].id);
  }

  function pick(name) {
    labelInput.value = name;
    hideSuggestions();
    runSearch();
  }

  async function updateSuggestions() {
    const prefix = labelInput.value.trim();
    const seq = ++suggestSeq;
    if (!prefix) {
      hideSuggestions();
      return;
    }
    let body;
    try {
      body = await getJson("api/suggest", { prefix });
    } catch (error) {
      hideSuggestions();
      return;
    }
    if (seq !== suggestSeq || document.activeElement !== labelInput) return;
    const names = body.suggestions.filter((name) => name.toLowerCase() !== prefix.toLowerCase());
    suggestionList.replaceChildren();
    names.forEach((name, index) => {
      const item = el("li", null, name);
      item.id = `suggestion-${index}`;
      item.setAttribute("role", "option");
      item.addEventListener("mousedown", (event) => {
        event.preventDefault();
        pick(name);
      });
      suggestionList.append(item);
    });
    suggestionList.hidden = names.length === 0;
    activeSuggestion = -1;
  }

  // --- results and facets ----------------------------------------------------------------------

  function renderFacets(facets, label) {
    facetTitle.textContent = label ? "Labels of these images" : "Top labels";
    facetList.replaceChildren();
    for (const facet of facets) {
      const button = el("button");
      button.type = "button";
      button.dataset.label = facet.name;
      if (label && facet.name.toLowerCase() === label.toLowerCase()) button.classList.add("active");
      button.append(el("span", "name", facet.name), el("span", "count", facet.count));
      button.addEventListener("click", () => pick(facet.name));
      const item = el("li");
      item.append(button);
      facetList.append(item);
    }
  }

  function card(hit) {
    const node = el("article", "card");
    node.tabIndex = 0;
    node.dataset.id = hit.id;
    node.dataset.title = hit.title;
    const image = el("img");
    image.alt = hit.title;
    image.loading = "lazy";
    const url = safeUrl(hit.url);
    if (url) image.src = url;
    const body = el("div", "body");
    body.append(el("div", "title", hit.title));
    if (hit.confidence !== null) body.append(el("div", "matched", `match ${percent(hit.confidence)}`));
    const chips = el("div", "chips");
    for (const label of hit.labels) chips.append(el("span", "chip", `${label.name} ${percent(label.confidence)}`));
    body.append(chips);
    if (hit.moderated) body.append(el("div", "moderated", "moderation labels"));
    node.append(image, body);
    node.addEventListener("click", () => openDetail(hit.id));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openDetail(hit.id);
      }
    });
    return node;
  }

  function params(after) {
    const query = {
      label: labelInput.value.trim(),
      min_confidence: slider.value,
      exclude_moderated: excludeModerated.checked ? "true" : "false",
    };
    if (after) query.after = after;
    return query;
  }

  async function runSearch(after) {
    const query = params(after);
    const seq = ++searchSeq;
    statusLine.classList.remove("error");
    statusLine.textContent = query.label ? "Searching…" : "Type a label, or pick one on the left.";
    let body;
    try {
      body = await getJson("api/search", query);
    } catch (error) {
      if (seq === searchSeq) showError(error);
      return;
    }
    if (seq !== searchSeq) return; // a newer search has started
    if (!after) results.replaceChildren();
    for (const hit of body.hits) results.append(card(hit));
    nextAfter = body.next_after;
    moreButton.hidden = !nextAfter;
    if (!after) renderFacets(body.facets, body.label);
    if (body.note) {
      statusLine.textContent = body.note;
    } else if (body.label) {
      const noun = body.total === 1 ? "image" : "images";
      statusLine.textContent = `${body.total} ${noun} with “${body.label}” at ${slider.value}% or more`;
    }
    results.dataset.state = "done";
    results.dataset.label = body.label;
  }

  // --- detail view -----------------------------------------------------------------------------

  function drawBoxes(labels) {
    const layer = $("detail-boxes");
    layer.replaceChildren();
    for (const label of labels) {
      for (const instance of label.instances) {
        const box = instance.box;
        const node = el("div", "box");
        node.style.left = `${box.left * 100}%`;
        node.style.top = `${box.top * 100}%`;
        node.style.width = `${box.width * 100}%`;
        node.style.height = `${box.height * 100}%`;
        node.dataset.label = label.name;
        if (box.top < 0.1) node.classList.add("caption-inside"); // no room above the box
        node.append(el("span", null, `${label.name} ${percent(instance.confidence)}`));
        layer.append(node);
      }
    }
  }

  async function openDetail(id) {
    hideSuggestions();
    let image;
    try {
      image = await getJson(`api/images/${encodeURIComponent(id)}`);
    } catch (error) {
      showError(error);
      return;
    }
    $("detail-title").textContent = image.title;
    const picture = $("detail-image");
    picture.alt = image.title;
    picture.removeAttribute("src");
    const url = safeUrl(image.url);
    if (url) picture.src = url;
    const size = image.width && image.height ? ` · ${image.width}×${image.height}` : "";
    const by = image.labeler ? ` · labeled by ${image.labeler}` : "";
    $("detail-caption").textContent = `${image.s3_location}${size}${by}`;
    drawBoxes(image.labels);

    const rows = $("detail-labels").querySelector("tbody");
    rows.replaceChildren();
    for (const label of image.labels) {
      const row = el("tr");
      row.dataset.label = label.name;
      const boxes = label.instances.length ? ` ▣${label.instances.length}` : "";
      row.append(
        el("td", null, `${label.name}${boxes}`),
        el("td", "num", percent(label.confidence)),
        el("td", null, label.parents.join(", ")),
      );
      rows.append(row);
    }
    const moderation = $("detail-moderation");
    moderation.replaceChildren();
    if (!image.moderation_checked) {
      moderation.append(el("li", null, "not checked"));
    } else if (image.moderation.length === 0) {
      moderation.append(el("li", null, "none found"));
    }
    for (const item of image.moderation) {
      const parent = item.parent ? ` (${item.parent})` : "";
      moderation.append(el("li", null, `${item.name}${parent} ${percent(item.confidence)}`));
    }
    dialog.dataset.id = image.id;
    if (!dialog.open) dialog.showModal();
    linkDetail(image.id);
    showSimilar(image.id);
  }

  // "More like this": images that look alike (visual similarity), each opening its own detail
  async function showSimilar(id) {
    const list = $("detail-similar");
    list.replaceChildren(el("li", null, "…"));
    let answer;
    try {
      answer = await getJson(`api/images/${encodeURIComponent(id)}/similar`);
    } catch (error) {
      list.replaceChildren(el("li", null, "not available"));
      return;
    }
    if (dialog.dataset.id !== id) return; // another image was opened meanwhile
    list.replaceChildren();
    if (answer.hits.length === 0) list.append(el("li", null, answer.checked ? "none found" : "no visual signals"));
    for (const hit of answer.hits) {
      const item = el("li");
      item.dataset.id = hit.id;
      item.title = hit.s3_location;
      const thumb = el("img");
      thumb.alt = hit.title;
      thumb.loading = "lazy";
      const url = safeUrl(hit.url);
      if (url) thumb.src = url;
      const caption = hit.near_duplicate ? "duplicate" : percent(100 * hit.similarity);
      item.append(thumb, el("div", hit.near_duplicate ? "duplicate" : null, `${hit.title} · ${caption}`));
      item.addEventListener("click", () => openDetail(hit.id));
      list.append(item);
    }
  }

  // ?image=<id> in the address: the open detail view, so it can be linked and reloaded
  function linkDetail(id) {
    const url = new URL(window.location.href);
    if (id) {
      url.searchParams.set("image", id);
    } else {
      url.searchParams.delete("image");
    }
    if (url.href !== window.location.href) window.history.replaceState(null, "", url.href);
  }

  // --- wiring ----------------------------------------------------------------------------------

  labelInput.addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => {
      updateSuggestions();
      runSearch();
    }, 250);
  });
  labelInput.addEventListener("keydown", (event) => {
    const items = suggestionList.querySelectorAll("li");
    if (event.key === "ArrowDown" && items.length) {
      event.preventDefault();
      highlightSuggestion((activeSuggestion + 1) % items.length);
    } else if (event.key === "ArrowUp" && items.length) {
      event.preventDefault();
      highlightSuggestion((activeSuggestion - 1 + items.length) % items.length);
    } else if (event.key === "Enter" && activeSuggestion >= 0 && items[activeSuggestion]) {
      event.preventDefault();
      pick(items[activeSuggestion].textContent);
    } else if (event.key === "Escape") {
      hideSuggestions();
    }
  });
  labelInput.addEventListener("blur", () => setTimeout(hideSuggestions, 100));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typingTimer);
    hideSuggestions();
    runSearch();
  });
  slider.addEventListener("input", () => {
    sliderValue.textContent = `${slider.value}%`;
  });
  slider.addEventListener("change", () => runSearch());
  excludeModerated.addEventListener("change", () => runSearch());
  moreButton.addEventListener("click", () => {
    if (nextAfter) runSearch(nextAfter);
  });
  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => linkDetail(null));
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });

  runSearch();
  const linked = new URLSearchParams(window.location.search).get("image");
  if (linked) openDetail(linked);
})();
