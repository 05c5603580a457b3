# Draws recall-qps-fashion-mnist.png (written by bench/report.py).
set terminal pngcairo size 1100,750 font 'sans,11' noenhanced
set output 'recall-qps-fashion-mnist.png'
set title 'fashion-mnist: recall@10 vs queries per second (one client, m=16; up and right is better)'
set xlabel 'recall@10 (scale: -log10(1 - recall); 1 drawn at 0.9999)'
set ylabel 'queries per second (log scale)'
set logscale y
set xrange [0.000:4.15]
set xtics ('0' -0.0000, '0.5' 0.3010, '0.8' 0.6990, '0.9' 1.0000, '0.95' 1.3010, '0.98' 1.6990, '0.99' 2.0000, '0.995' 2.3010, '0.998' 2.6990, '0.999' 3.0000, '1' 4.0000)
set grid xtics ytics mytics
set key outside right top box
set samples 2
plot 'plot-fashion-mnist-0.dat' using (-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1)):2 with linespoints lw 2 pt 7 ps 0.8 dt 1 lc rgb '#d62728' title 'hannoy efc=64', 'plot-fashion-mnist-0.dat' using (-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1)):2:3 with labels offset 0.9,0.7 font ',8' tc rgb '#d62728' notitle, 'plot-fashion-mnist-1.dat' using (-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1)):2 with linespoints lw 2 pt 7 ps 0.8 dt 1 lc rgb '#1f77b4' title 'pgvector efc=64', 'plot-fashion-mnist-1.dat' using (-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1)):2:3 with labels offset 0.9,0.7 font ',8' tc rgb '#1f77b4' notitle, 'plot-fashion-mnist-exact.dat' using (-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1)):2 with points pt 5 ps 1.5 lc rgb 'black' title 'exact scan', 11851.4 with lines dt 3 lw 2 lc rgb 'gray40' title 'SQL floor (pk range, 10 rows)'
