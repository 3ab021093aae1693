// scrm console: the only script. "Select all" checkboxes for bulk actions (event replay).
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-check-all]")) return;
  var name = box.getAttribute("data-check-all");
  box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
    other.checked = box.checked;
  });
});
