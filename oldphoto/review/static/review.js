// oldphoto review: before/after slider, zoom, mask overlay. Plain JavaScript, no build step.
(function () {
  "use strict";
  var slider = document.getElementById("slider");
  var clip = document.getElementById("before-clip");
  var divider = document.getElementById("divider");
  var stage = document.getElementById("stage");
  var viewer = document.getElementById("viewer");
  var mask = document.getElementById("mask");
  var maskToggle = document.getElementById("mask-toggle");

  function setSplit(pct) {
    pct = Math.max(0, Math.min(100, pct));
    if (clip) { clip.style.clipPath = "inset(0 " + (100 - pct) + "% 0 0)"; }
    if (divider) { divider.style.left = pct + "%"; }
    if (slider && String(slider.value) !== String(pct)) { slider.value = pct; }
    if (stage) { stage.dataset.split = String(pct); }
  }
  if (slider) {
    slider.addEventListener("input", function () { setSplit(Number(slider.value)); });
    setSplit(Number(slider.value));
  }

  // a click or drag on the image at "fit" moves the split line there
  if (stage && clip) {
    var dragging = false;
    function splitAt(ev) {
      var r = stage.getBoundingClientRect();
      setSplit(Math.round(100 * (ev.clientX - r.left) / r.width));
    }
    stage.addEventListener("pointerdown", function (ev) {
      if (stage.dataset.zoom && stage.dataset.zoom !== "fit") { return; }
      dragging = true; splitAt(ev);
    });
    window.addEventListener("pointermove", function (ev) { if (dragging) { splitAt(ev); } });
    window.addEventListener("pointerup", function () { dragging = false; });
  }

  // zoom: "fit" = the viewer's width; N = N image pixels per screen pixel (device independent)
  function setZoom(z) {
    var img = document.getElementById("after") || document.getElementById("before");
    if (!stage || !img) { return; }
    stage.dataset.zoom = z;
    if (z === "fit") {
      // the whole image in the viewer: as wide as it allows, no taller than it
      var ratio = (img.naturalWidth || 1) / (img.naturalHeight || 1);
      var maxH = viewer ? parseFloat(getComputedStyle(viewer).maxHeight) || viewer.clientHeight : 0;
      var fitW = viewer ? viewer.clientWidth : 0;
      stage.style.width = (maxH && fitW ? Math.min(fitW, Math.floor(maxH * ratio)) + "px" : "100%");
    } else {
      var w = img.naturalWidth || img.width;
      stage.style.width = (w * Number(z)) + "px";
    }
    document.querySelectorAll(".zoom-btn").forEach(function (b) {
      b.classList.toggle("active", b.dataset.zoom === z);
    });
  }
  document.querySelectorAll(".zoom-btn").forEach(function (b) {
    b.addEventListener("click", function () { setZoom(b.dataset.zoom); });
  });
  var first = document.getElementById("after") || document.getElementById("before");
  if (first && stage) {
    var fitNow = function () { if (!stage.dataset.zoom || stage.dataset.zoom === "fit") { setZoom("fit"); } };
    if (first.complete && first.naturalWidth) { fitNow(); } else { first.addEventListener("load", fitNow); }
    window.addEventListener("resize", fitNow);
  }

  // drag to pan when zoomed in
  if (viewer) {
    var pan = null;
    viewer.addEventListener("pointerdown", function (ev) {
      if (!stage || !stage.dataset.zoom || stage.dataset.zoom === "fit") { return; }
      pan = {x: ev.clientX, y: ev.clientY, l: viewer.scrollLeft, t: viewer.scrollTop};
      ev.preventDefault();
    });
    window.addEventListener("pointermove", function (ev) {
      if (!pan) { return; }
      viewer.scrollLeft = pan.l - (ev.clientX - pan.x);
      viewer.scrollTop = pan.t - (ev.clientY - pan.y);
    });
    window.addEventListener("pointerup", function () { pan = null; });
  }

  if (maskToggle && mask) {
    maskToggle.addEventListener("change", function () { mask.classList.toggle("hidden", !maskToggle.checked); });
  }

  // filters apply on change
  var filters = document.getElementById("filters");
  if (filters) {
    filters.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () {
        var page = filters.querySelector("input[name=page]");
        if (page) { page.remove(); }
        filters.submit();
      });
    });
  }
})();
