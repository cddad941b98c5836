// Light and dark themes, remembered in localStorage.
const KEY = "loglake.theme";

/** Apply the remembered (or the system's) theme and make `button` toggle it. */
export function setupTheme(button) {
  let stored = null;
  try {
    stored = localStorage.getItem(KEY);
  } catch {
    // Storage may be off (private mode): the theme is then not remembered.
  }
  const initial = stored || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  apply(initial, button);
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    apply(next, button);
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // See above.
    }
  });
}

function apply(theme, button) {
  document.documentElement.dataset.theme = theme;
  button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  document.dispatchEvent(new CustomEvent("themechange"));
}
