// Re-renders the chart and docs/benchmarks.md from a stored bench result, without measuring:
//   node dist/bench/report.js RESULT.json [--svg FILE] [--docs]
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { renderChart } from './lib/svg';
import { renderMarkdown } from './lib/report';
import { validateResult, type BenchResult } from './lib/schema';

const ROOT = path.resolve(__dirname, '..', '..');

function main(argv: string[]): number {
  const file = argv.find((a) => !a.startsWith('--'));
  if (!file) {
    process.stderr.write('usage: report RESULT.json [--svg FILE] [--docs]\n');
    return 2;
  }
  const result = JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
  const problems = validateResult(result);
  if (problems.length) {
    process.stderr.write(`${file}: not a bench result: ${problems.join('; ')}\n`);
    return 1;
  }
  const svgAt = argv.indexOf('--svg');
  if (svgAt >= 0 && argv[svgAt + 1]) writeFileSync(argv[svgAt + 1], renderChart(result));
  if (argv.includes('--docs')) {
    mkdirSync(path.join(ROOT, 'docs', 'bench'), { recursive: true });
    writeFileSync(path.join(ROOT, 'docs', 'bench', 'latest.svg'), renderChart(result));
    if (path.resolve(file) !== path.join(ROOT, 'docs', 'bench', 'latest.json')) {
      writeFileSync(path.join(ROOT, 'docs', 'bench', 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    }
    const notesFile = path.join(ROOT, 'docs', 'bench', 'notes.md');
    const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8') : undefined;
    writeFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), renderMarkdown(result, { chart: 'bench/latest.svg', json: 'bench/latest.json', notes }));
  }
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
