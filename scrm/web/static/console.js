// scrm console: the only script, plain JavaScript with no framework.

// "Select all" checkboxes for bulk actions (event replay, bulk tagging). form.elements includes
// boxes that join the form from elsewhere on the page (form="…"), as the friends list's rows do.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-check-all]") || !box.form) return;
  var name = box.getAttribute("data-check-all");
  Array.prototype.forEach.call(box.form.elements, function (other) {
    if (other !== box && other.type === "checkbox" && other.name === name) other.checked = box.checked;
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

// Buttons that change something hard to undo ask first (data-confirm). A form with a "confirmed"
// field records the answer, so the server can tell a considered retry from a stray submit.
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("button[data-confirm]") : null;
  if (!button) return;
  if (!window.confirm(button.getAttribute("data-confirm"))) {
    event.preventDefault();
    return;
  }
  var field = button.form && button.form.querySelector('input[name="confirmed"]');
  if (field) field.value = "1";
});

// "Insert {客户昵称}" buttons under the welcome text: put the placeholder at the cursor.
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("button[data-insert]") : null;
  if (!button) return;
  var area = document.getElementById(button.getAttribute("data-target"));
  if (!area) return;
  var text = button.getAttribute("data-insert");
  var start = area.selectionStart != null ? area.selectionStart : area.value.length;
  var end = area.selectionEnd != null ? area.selectionEnd : start;
  area.value = area.value.slice(0, start) + text + area.value.slice(end);
  area.focus();
  area.selectionStart = area.selectionEnd = start + text.length;
});
