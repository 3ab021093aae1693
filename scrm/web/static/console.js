// scrm console: the only script, plain JavaScript with no framework.

// "Select all" checkboxes for bulk actions (event replay).
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-check-all]")) return;
  var name = box.getAttribute("data-check-all");
  box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
    other.checked = box.checked;
  });
});

// On a phone the status tabs are one strip that scrolls sideways; bring the chosen tab into view.
document.querySelectorAll(".tabs").forEach(function (strip) {
  var active = strip.querySelector("a.active");
  if (active && strip.scrollWidth > strip.clientWidth) {
    var offset = active.getBoundingClientRect().left - strip.getBoundingClientRect().left;
    strip.scrollLeft += offset - (strip.clientWidth - active.offsetWidth) / 2;
  }
});
