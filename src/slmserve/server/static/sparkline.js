// A small line chart on a canvas, ours so the dashboard needs no build step and nothing from the internet.
// Series colours come from the canvas's CSS variables --s0, --s1, so the page's legend and the lines agree.

/** Round v up to 1, 2 or 5 times a power of ten, so the chart's top label is a readable number. */
function niceCeiling(v) {
  if (!(v > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= v);
}

/** Draw series (arrays of numbers or null, oldest first, newest at the right edge) over `points` x positions. */
function drawChart(canvas, series, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas);
  const top = niceCeiling(Math.max(0, ...series.flat().filter(Number.isFinite)));
  const y = (v) => height - 1 - (height - 14) * (v / top); // 14 px left free above for the label

  ctx.strokeStyle = style.getPropertyValue("--grid").trim();
  ctx.beginPath();
  ctx.moveTo(0, y(top));
  ctx.lineTo(width, y(top));
  ctx.moveTo(0, y(0));
  ctx.lineTo(width, y(0));
  ctx.stroke();
  ctx.fillStyle = style.color;
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(String(top), 2, 10);

  series.forEach((data, i) => {
    ctx.strokeStyle = ctx.fillStyle = style.getPropertyValue(`--s${i}`).trim();
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    const x = (j) => (width * (points - data.length + j)) / (points - 1);
    data.forEach((v, j) => {
      if (!Number.isFinite(v)) return; // a null leaves a gap rather than a line to zero
      if (Number.isFinite(data[j - 1])) ctx.lineTo(x(j), y(v));
      else if (Number.isFinite(data[j + 1])) ctx.moveTo(x(j), y(v));
      else ctx.fillRect(x(j) - 1.5, y(v) - 1.5, 3, 3); // a lone point would draw nothing as a line
    });
    ctx.stroke();
  });
}
