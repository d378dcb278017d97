/* "Copy" beside the support text of a failed lead: shown only where the browser can copy; the text stays
   selectable without it. */
"use strict";
document.querySelectorAll("button.crmify-copy").forEach(function (button) {
    if (!navigator.clipboard) {
        return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.target).value;
        navigator.clipboard.writeText(text).then(function () {
            button.textContent = button.dataset.done || "Copied";
        });
    });
});
