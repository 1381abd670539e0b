"""The course as a student meets it: JupyterLab in headless Chromium (Playwright, Debian's Chromium).

A JupyterLab server on a free loopback port, with a temporary token, config and a
temporary copy of ``notebooks/`` (see ``browser_helpers.JupyterLab``), opens a
notebook, runs all cells from the Run menu and then uses the widgets through the
DOM: the slider handle with the keyboard, the slider readouts by typing, the
Run / Stop / Reset buttons, the writer dropdown. Screenshots of every step go to
``artifacts/browser/``. The server, its kernels and the browser are shut down at
the end whatever happens, and the fixtures check that none of their processes is
left.

Needs ``chromium`` (``./test.sh`` installs Debian's) and Playwright for Python
(the ``test`` extra); no browser is downloaded.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import time

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from browser_helpers import CHROMIUM_ARGS, JupyterLab, chromium_path, cmdline, descendants, wait_gone

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'artifacts' / 'browser'
TIMEOUT_MS = 120_000  # one widget action or round on 2 busy cores
RUN_ALL_TIMEOUT_MS = 420_000  # all cells of a notebook, models trained included
LAPTOP = {'width': 1366, 'height': 768}


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob('*.png'):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope='module')
def lab(tmp_path_factory, artifacts):
    """A JupyterLab server on a copy of notebooks/, in the offline fast mode of the tests."""
    server = JupyterLab(ROOT / 'notebooks', tmp_path_factory.mktemp('jupyterlab'),
                        env={'FEDTEACH_DATA': 'offline', 'FEDTEACH_FAST': '1', 'TF_CPP_MIN_LOG_LEVEL': '2'})
    try:
        server.start()
        yield server
    finally:
        left = server.stop()
        shutil.copyfile(server.log_path, artifacts / 'jupyterlab.log')
        assert server.process.poll() is not None, 'the JupyterLab server is still running'
        assert not left, 'processes of JupyterLab left running: ' + '; '.join(f'{p} {cmdline(p)}' for p in left)


@pytest.fixture(scope='module')
def browser():
    """Debian's headless Chromium, closed (and checked gone) at the end."""
    path = chromium_path()
    if path is None:
        pytest.fail('Chromium is missing: `apt-get install chromium` (./test.sh does it when run as root).')
    before = descendants(os.getpid())
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        ours = descendants(os.getpid()) - before
        left = wait_gone(ours, timeout=15)
        assert not left, 'browser processes left running: ' + '; '.join(f'{p} {cmdline(p)}' for p in left)


def _page(browser, request, artifacts, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    failed = request.session.testsfailed
    try:
        yield page
    finally:
        if request.session.testsfailed > failed:  # what the student saw when the test failed
            try:
                page.screenshot(path=artifacts / f'FAILED-{request.node.name}.png')
            except Exception:  # noqa: BLE001 - the failure itself is what matters
                pass
        context.close()


@pytest.fixture
def page(browser, request, artifacts):
    """A tall window: the whole widget in one screenshot."""
    yield from _page(browser, request, artifacts, {'width': 1400, 'height': 1300})


@pytest.fixture
def laptop(browser, request, artifacts):
    """A 1366x768 laptop screen."""
    yield from _page(browser, request, artifacts, LAPTOP)


# --- helpers -------------------------------------------------------------------------------------

def shot(locator_or_page, name: str) -> bytes:
    """Saves a screenshot to artifacts/browser/<name>.png and returns its bytes."""
    return locator_or_page.screenshot(path=ARTIFACTS / f'{name}.png', animations='disabled')


def open_and_run_all(page: Page, lab: JupyterLab, notebook: str) -> None:
    """Opens ``notebook`` (in a workspace of its own), waits for the kernel, runs Run > Run All Cells."""
    workspace = re.sub(r'\W', '', notebook)
    page.goto(f'{lab.url}/lab/workspaces/{workspace}/tree/{notebook}?token={lab.token}')
    page.locator('.jp-NotebookPanel .jp-Cell').first.wait_for()
    expect(page.locator('#jp-main-statusbar')).to_contain_text(re.compile(r'Python 3.*\|\s*Idle'))
    page.locator('#jp-MainMenu .lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
    # Done when some cell ran and none is running or queued ([*]); Run All stops at an error.
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
        return prompts.some(p => /\\[\\d+\\]/.test(p.textContent)) && !prompts.some(p => p.textContent.includes('*'));
    }""", timeout=RUN_ALL_TIMEOUT_MS, polling=500)
    expect(page.locator('#jp-main-statusbar')).to_contain_text(re.compile(r'\|\s*Idle'))
    prompts = page.locator('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt').all_text_contents()
    if not all(re.search(r'\[\d+\]', prompt) for prompt in prompts):
        errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        details = '\n'.join(text[-2000:] for text in errors.all_inner_texts() if 'Error' in text)
        pytest.fail(f'{notebook}: Run All Cells stopped at an error (prompts {prompts}):\n{details}')


def widget_output(page: Page, label: str):
    """The rendered widget (root output) of the code cell whose widgets include the label ``label``."""
    cell = page.locator('.jp-CodeCell').filter(has=page.locator('.widget-label', has_text=label))
    try:
        cell.wait_for(timeout=60_000)
    except PlaywrightTimeoutError:
        texts = page.locator('.jp-CodeCell .jp-OutputArea-output').all_inner_texts()
        pytest.fail(f'no widget labelled {label!r} is rendered (is the ipywidgets front-end extension, '
                    f'jupyterlab_widgets, installed?); the outputs show: {[t[:300] for t in texts]}')
    return cell.locator('.jp-OutputArea-output').filter(has=page.locator('.jupyter-widgets')).first


def slider(root, description: str):
    return root.locator('.widget-slider').filter(
        has=root.page.locator('label.widget-label', has_text=re.compile(f'^{re.escape(description)}$')))


def type_into_readout(slider_locator, text: str) -> None:
    """What a student does to type a value: click the slider's readout, select it, type, Enter."""
    readout = slider_locator.locator('.widget-readout')
    readout.click()
    readout.press('ControlOrMeta+a')
    readout.press_sequentially(text)
    readout.press('Enter')


def scroll_to_top(page: Page, locator) -> None:
    """Scrolls the notebook until ``locator`` is at its top (or the notebook's end is reached), as a student would.

    JupyterLab's notebook re-lays itself out while scrolling, so the scroll is repeated until it holds.
    """
    page.wait_for_function("""element => {
        const outer = element.closest('.jp-WindowedPanel-outer') || element.closest('.jp-Notebook');
        const offset = element.getBoundingClientRect().top - outer.getBoundingClientRect().top;
        const atEnd = outer.scrollTop + outer.clientHeight >= outer.scrollHeight - 1;
        if (Math.abs(offset) < 2 || (atEnd && offset > 0)) return true;
        outer.scrollTop += offset;
        return false;
    }""", arg=locator.element_handle(), polling=200)
    page.wait_for_timeout(200)


def log_input_box(root, description: str):
    """The box beside a log-scale slider, where a student types an exact value."""
    return root.locator('.fedteach-log-input').filter(has_text=description).locator('input')


def type_into_box(box, text: str) -> None:
    box.click()
    box.press('ControlOrMeta+a')
    box.press_sequentially(text)
    box.press('Enter')


def button(root, text: str):
    """A widget button by its text (its accessible name also holds the Font Awesome glyph)."""
    return root.locator('button.widget-button').filter(has_text=re.compile(f'^{re.escape(text)}$'))


def plot_src(image) -> str:
    src = image.get_attribute('src') or ''
    assert src.startswith('data:image/png;base64,') and len(src) > 1000, src[:80]
    return src


def table_rounds(metrics) -> list[int]:
    return [int(t) for t in metrics.locator('tr td:first-child').all_text_contents()]


# --- tests ---------------------------------------------------------------------------------------

def test_training_dashboard_in_jupyterlab(laptop, lab):
    """Notebook 3 on a 1366x768 screen: Run All; a rounds-only change continues the run; a settings change
    starts a new run (click-to-first-round timed); Stop and Run resume the counter; Reset."""
    page = laptop
    started = time.monotonic()
    open_and_run_all(page, lab, '03_federated_averaging.ipynb')
    dashboard = widget_output(page, 'rounds per Run')
    root = dashboard.locator(':scope > .widget-vbox')
    run = button(root, 'Run')
    stop = button(root, 'Stop')
    reset = button(root, 'Reset')
    progress = root.locator('.widget-hprogress .progress-bar')
    round_label = root.locator('div.widget-label')
    status, error, metrics = (root.locator(':scope > .widget-html .widget-html-content').nth(i) for i in range(3))
    image = root.locator('.widget-output img')

    # After Run All: the notebook's own dashboard.run(block=True) trained run 1 (3 rounds in FAST mode).
    expect(round_label).to_have_text('round 3 / 3 of run 1 (model trained 3 rounds)')
    expect(progress).to_have_attribute('style', re.compile(r'width: 100%'))
    expect(status).to_contain_text('Done: run 1 (lr=0.02, 3 clients, 2 epochs) trained 3 rounds.')
    assert table_rounds(metrics) == [1, 2, 3]
    expect(run).to_be_enabled()
    expect(stop).to_be_disabled()

    # The layout on a laptop: with the dashboard at the top of the notebook, the buttons, the whole plot
    # and the settings beside it are on the screen; the advanced settings are not there (notebook 3).
    scroll_to_top(page, dashboard)
    shot(page, '03-0-laptop-1366x768')
    plot_box, run_box = image.bounding_box(), run.bounding_box()
    rounds = slider(root, 'rounds per Run')
    settings_box = rounds.bounding_box()
    assert run_box['y'] >= 0 and plot_box['y'] + plot_box['height'] <= LAPTOP['height'], (run_box, plot_box)
    assert settings_box['x'] >= plot_box['x'] + plot_box['width'] - 1, 'the settings are not beside the plot'
    assert settings_box['y'] + settings_box['height'] <= LAPTOP['height'], settings_box
    assert root.locator('label.widget-label', has_text='server learning rate').count() == 0
    assert root.locator('[title="null"]').count() == 0, 'a widget shows a "null" tooltip'
    src_before = plot_src(image)

    # Only "rounds per Run" changes: the same run goes on (no new legend entry, no new model).
    type_into_readout(rounds, '2')
    expect(rounds.locator('.widget-readout')).to_have_text('2')
    run.click()
    expect(round_label).to_have_text('round 2 / 2 of run 1 (model trained 5 rounds)')
    expect(status).to_have_text('Done: run 1 (lr=0.02, 3 clients, 2 epochs) trained 2 rounds.')
    assert table_rounds(metrics) == [1, 2, 3, 4, 5]
    expect(image).not_to_have_attribute('src', src_before)

    # A settings change: the handle with the keyboard, an exact learning rate typed into its box.
    clients = slider(root, 'clients per round')
    clients.locator('.noUi-handle').focus()
    clients.locator('.noUi-handle').press('ArrowRight')
    clients.locator('.noUi-handle').press('ArrowRight')
    expect(clients.locator('.widget-readout')).to_have_text('5')
    learning_rate = log_input_box(root, 'client learning rate')
    type_into_box(learning_rate, '0.05')
    expect(learning_rate).to_have_value('0.05')
    shot(dashboard, '03-1-settings-changed')
    clicked = time.monotonic()
    run.click()
    # The first round of the new run (with the background warm-up, the second may already be done when looked at).
    expect(round_label).to_have_text(re.compile(r'^round [12] / 2 of run 2 '), timeout=TIMEOUT_MS)
    first_round = time.monotonic() - clicked
    expect(status).to_contain_text('New run 2: clients per round 3 → 5, client learning rate 0.02 → 0.05; '
                                   'it continues from the model after round 5.')
    expect(round_label).to_have_text('round 2 / 2 of run 2 (model trained 7 rounds)')
    expect(status).to_contain_text('Done: run 2 (lr=0.05, 5 clients, 2 epochs, from round 5) trained 2 rounds.')
    expect(progress).to_have_class(re.compile('progress-bar-success'))
    expect(error).to_be_empty()
    assert table_rounds(metrics) == [6, 7]
    shot(dashboard, '03-2-new-run')
    print(f'\nclick-to-first-round after a settings change: {first_round:.2f} s')

    # Stop a 100-round Run after a round or two; Run resumes it: the counter goes on from where it stopped.
    type_into_readout(rounds, '100')
    expect(rounds.locator('.widget-readout')).to_have_text('100')
    run.click()
    expect(round_label).to_have_text(re.compile(r'^round ([2-9]|\d\d) / 100 of run 2 '))
    stop.click()
    expect(status).to_contain_text(re.compile(r'Stopped after round \d+ \(\d+ of 100\)\. Press Run to continue\.'))
    expect(run).to_be_enabled()
    expect(progress).to_have_class(re.compile('progress-bar-warning'))
    stopped = re.match(r'round (\d+) / 100 of run 2 \(model trained (\d+) rounds\)', round_label.inner_text())
    assert stopped, round_label.inner_text()
    done, trained = map(int, stopped.groups())
    assert 2 <= done < 100 and trained == 7 + done, (done, trained)
    shot(dashboard, '03-3-stopped')

    run.click()
    expect(status).to_contain_text(f'resumes its Run at round {done + 1} of 100.')
    expect(round_label).to_have_text(re.compile('|'.join(
        rf'^round {k} / 100 of run 2 \(model trained {7 + k} rounds\)$' for k in range(done + 1, 100))))
    stop.click()
    expect(status).to_contain_text('Stopped after round')
    expect(run).to_be_enabled()
    again = re.match(r'round (\d+) / 100 of run 2 \(model trained (\d+) rounds\)', round_label.inner_text())
    assert again and int(again.group(1)) > done and int(again.group(2)) == 7 + int(again.group(1))
    assert table_rounds(metrics)[-1] == int(again.group(2))
    expect(error).to_be_empty()
    shot(dashboard, '03-4-resumed-and-stopped')

    # Reset forgets every run.
    plot_runs = plot_src(image)
    reset.click()
    expect(round_label).to_have_text('no rounds yet')
    expect(status).to_have_text('All runs cleared.')
    expect(metrics).to_be_empty()
    expect(image).not_to_have_attribute('src', plot_runs)
    shot(dashboard, '03-5-reset')
    print(f'dashboard test: {time.monotonic() - started:.0f} s')


def test_client_explorer_in_jupyterlab(page, lab):
    """Notebook 1: Run All, then pick another writer in the explorer's dropdown: the samples change."""
    started = time.monotonic()
    open_and_run_all(page, lab, '01_federated_data.ipynb')
    explorer = widget_output(page, 'writer')
    explorer.scroll_into_view_if_needed()
    dropdown = explorer.locator('.widget-dropdown select')
    info = explorer.locator('.widget-html-content').first
    image = explorer.locator('.widget-output img')
    options = dropdown.locator('option').all_text_contents()
    assert len(options) > 3, options
    expect(info).to_contain_text(f'{options[0]}:')
    src_before = plot_src(image)
    before = shot(image, '01-0-samples-before')
    shot(explorer, '01-1-explorer-first-writer')

    dropdown.select_option(label=options[3])  # as a student picks from the list
    expect(info).to_contain_text(f'{options[3]}:')
    expect(image).not_to_have_attribute('src', src_before)
    after = shot(image, '01-2-samples-after')
    assert after != before, 'the samples did not change with another writer'
    expect(explorer.locator('.widget-html-content').nth(1)).to_be_empty()  # no error shown
    shot(explorer, '01-2-explorer-other-writer')
    print(f'\nexplorer test: {time.monotonic() - started:.0f} s')
